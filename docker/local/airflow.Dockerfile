# Stand-in for the official Airflow image where no image registry is reachable: Debian's
# Python 3.11, an `airflow` user (uid 50000, group 0) whose virtualenv is first on PATH,
# AIRFLOW_HOME=/opt/airflow, the same entrypoint rule and, as there, the driver of the
# Postgres metadata database (psycopg2, and asyncpg for its async engine). Airflow itself is installed by docker/Dockerfile
# at the lock's version, as over the official image.
ARG BASE_IMAGE=stockpipe/debian:bookworm
FROM ${BASE_IMAGE}
ARG PSYCOPG2_VERSION=2.9.13
ARG ASYNCPG_VERSION=0.32.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 50000 --gid 0 --create-home airflow \
 && mkdir -p /opt/airflow/auth /opt/airflow/logs && chown -R airflow:0 /opt/airflow
USER airflow
RUN python3 -m venv /home/airflow/venv \
 && /home/airflow/venv/bin/pip install -q --no-cache-dir --upgrade pip \
 && /home/airflow/venv/bin/pip install -q --no-cache-dir "psycopg2-binary==${PSYCOPG2_VERSION}" \
      "asyncpg==${ASYNCPG_VERSION}"
ENV PATH=/home/airflow/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    AIRFLOW_HOME=/opt/airflow
COPY airflow-entrypoint.sh /entrypoint
WORKDIR /opt/airflow
ENTRYPOINT ["/usr/bin/tini", "--", "/entrypoint"]
