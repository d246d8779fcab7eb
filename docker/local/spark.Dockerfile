# Stand-in for the official apache/spark image where no image registry is reachable:
# Debian's OpenJDK 17 and Python 3.11, Spark from the pyspark wheel at the pinned
# version, laid out as /opt/spark (bin/spark-class, jars/) and run as user `spark`.
ARG BASE_IMAGE=stockpipe/debian:bookworm
FROM ${BASE_IMAGE}
ARG SPARK_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless python3 python3-venv \
      curl ca-certificates procps tini \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/spark-python \
 && /opt/spark-python/bin/pip install -q --no-cache-dir "pyspark==${SPARK_VERSION}" \
 && ln -s /opt/spark-python/lib/python3.11/site-packages/pyspark /opt/spark \
 && useradd --system --uid 185 --home-dir /opt/spark spark \
 && mkdir /opt/spark/work && chown spark /opt/spark/work
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    SPARK_HOME=/opt/spark \
    PATH=/opt/spark-python/bin:/opt/spark/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /opt/spark/work
USER spark
