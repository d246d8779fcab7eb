# Stand-in for the Go image that docker/minio/Dockerfile builds MinIO in: the binary the
# local stack already built from the Go proxy, staged into the build context.
ARG BASE_IMAGE=stockpipe/debian:bookworm
FROM ${BASE_IMAGE}
COPY minio /go/bin/minio
