# Stand-in for the official postgres image where no image registry is reachable:
# Debian's PostgreSQL, with the official image's contract (POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB, scripts in /docker-entrypoint-initdb.d run once on an empty data volume).
ARG BASE_IMAGE=stockpipe/debian:bookworm
FROM ${BASE_IMAGE}
# no cluster of Debian's own: the entrypoint makes one in the volume
RUN mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql tini \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d \
 && mkdir -p /var/run/postgresql && chown postgres /var/run/postgresql \
 && chown postgres /var/lib/postgresql/data && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/docker-entrypoint.sh"]
