#!/bin/bash
# The official image's contract: every KAFKA_<NAME> variable is the broker property
# <name> ("_" -> ".", "__" -> "_", "___" -> "-"); storage is formatted once with CLUSTER_ID.
set -euo pipefail
conf=/opt/kafka/config/server.properties
: > "$conf"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' \
    | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
  printf '%s=%s\n' "$key" "$value" >> "$conf"
done < <(env)
cat > /opt/kafka/config/log4j2.properties <<'LOG'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
LOG
log4j="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
data_dir=$(sed -n 's/^log\.dirs=//p' "$conf")
if [ ! -f "${data_dir:-/var/lib/kafka/data}/meta.properties" ]; then
  java -Xmx256m "$log4j" -cp "/opt/kafka/libs/*" kafka.tools.StorageTool format \
    "--cluster-id=${CLUSTER_ID:?CLUSTER_ID is required}" -c "$conf"
fi
# shellcheck disable=SC2086  # the options are words, as in the official scripts
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  ${KAFKA_OPTS:-} "$log4j" -Djava.net.preferIPv4Stack=true -cp "/opt/kafka/libs/*" kafka.Kafka "$conf"
