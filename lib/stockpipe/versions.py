"""Every pinned version of a non-Python component, in one place.

Python packages are pinned in pyproject.toml and uv.lock (requirements.txt is exported
from it); SPARK and DELTA must equal the pyspark and delta-spark pins there.
"""

from __future__ import annotations

#: Apache Kafka broker (KRaft), jars from Maven Central.
KAFKA = "4.4.0"
#: SLF4J 2 API + log4j2 binding for the broker (Kafka's POM brings neither).
SLF4J = "2.0.17"
LOG4J = "2.25.2"

#: Spark's Kafka connector, at the pyspark version.
SPARK = "4.2.0"
SCALA = "2.13"
#: Delta Lake for Spark (``delta-spark_<spark major.minor>``) and its storage jar; the
#: delta-spark wheel in pyproject.toml must have the same version (PyPI's 4.4.1 has no jar).
DELTA = "4.4.0"
#: hadoop-aws at the Hadoop version pyspark bundles (pyspark/jars/hadoop-client-api-*.jar).
HADOOP = "3.5.0"

#: MinIO server, built from source with `go install`. The last community release is
#: RELEASE.2025-10-15T17-29-55Z (pseudo-version v0.0.0-20251015172955-9e49d5e7a648),
#: which the Go module proxy reachable here refuses; this is the newest commit it serves.
MINIO_MODULE = "github.com/minio/minio"
MINIO = "v0.0.0-20260212201848-7aac2a2c5b7c"

#: Docker Compose v2 for the deployment (`make engine-start`), built from the Go proxy; it
#: speaks the Docker API 1.41 of Debian 12's docker.io 20.10 engine.
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE = "v2.40.3"

#: The Debian release the local build mode's base image is bootstrapped from (this
#: machine's release, whose mirror is reachable).
DEBIAN = "bookworm"
