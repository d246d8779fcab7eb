# Stand-in for the official apache/kafka image where no image registry is reachable:
# Debian's OpenJDK 17 and the broker jars the local stack fetched from Maven Central
# (staged into the build context as libs/), configured from KAFKA_* variables and
# CLUSTER_ID as the official image is, with its tool scripts under /opt/kafka/bin.
ARG BASE_IMAGE=stockpipe/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --create-home appuser \
 && mkdir -p /var/lib/kafka/data /opt/kafka/config && chown -R appuser /var/lib/kafka /opt/kafka/config
COPY libs /opt/kafka/libs
COPY kafka-entrypoint.sh /opt/kafka/bin/run
RUN for tool in kafka-broker-api-versions:org.apache.kafka.tools.BrokerApiVersionsCommand \
      kafka-topics:org.apache.kafka.tools.TopicCommand \
      kafka-storage:kafka.tools.StorageTool; do \
      printf '#!/bin/sh\nexec java -Xmx128m -Xshare:auto -cp "/opt/kafka/libs/*" %s "$@"\n' \
        "${tool#*:}" > "/opt/kafka/bin/${tool%%:*}.sh"; \
      chmod 755 "/opt/kafka/bin/${tool%%:*}.sh"; \
    done
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
USER appuser
EXPOSE 9092 9093
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/kafka/bin/run"]
