# The base of every image of the local build mode: Debian bootstrapped on this machine
# (imported as stockpipe/debian-rootfs), with Debian's CA certificates plus the machine's
# own (/usr/local/share/ca-certificates, staged as ca/), so that builds behind a
# TLS-inspecting proxy reach PyPI and Maven Central as the machine's setup does.
ARG ROOTFS_IMAGE=stockpipe/debian-rootfs:bookworm
FROM ${ROOTFS_IMAGE}
COPY ca /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
