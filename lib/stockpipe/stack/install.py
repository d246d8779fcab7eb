"""Fetch and build the pinned non-Python parts into a per-user cache.

Each part lands in ``<cache_dir>/<part>-<version>/`` and is marked complete only
after it was fully fetched, so an interrupted or failed download is retried on
the next run and a finished one is never fetched again. Fresh clones and CI
share the cache; after setup nothing needs the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from stockpipe import versions
from stockpipe.errors import MissingToolError, SetupError
from stockpipe.spark.jvm import JAR_PARTS

_FIX = {
    "java": "install OpenJDK 17: apt-get install -y openjdk-17-jdk-headless",
    "mvn": "install Maven: apt-get install -y maven",
    "go": "install Go >= 1.24 (https://go.dev/doc/install) and put it on PATH",
    "postgres": "install PostgreSQL: apt-get install -y postgresql (`make setup` does, as root)",
    "debootstrap": "install debootstrap: apt-get install -y debootstrap (`make engine-start` does)",
    "dockerd": "install Docker: apt-get install -y docker.io (`make engine-start` does, as root)",
}
_PURPOSE = {
    "java": "run the Kafka broker and Spark",
    "mvn": "fetch the Kafka broker and Spark connector jars from Maven Central",
    "go": "build the MinIO server from source",
    "postgres": "run the warehouse (PostgreSQL) that `stockpipe export` loads",
    "debootstrap": "make the Debian root file system of the local image build mode",
    "dockerd": "run a Docker engine for the Compose deployment",
}
_MARKER = ".complete"


def require_tool(tool: str) -> str:
    """Path of a tool, or an error that names it and says how to install it."""
    path = shutil.which(tool)
    if not path:
        raise MissingToolError(tool, _PURPOSE[tool], _FIX[tool])
    return path


#: Where Debian puts each PostgreSQL major version's server binaries (not on PATH).
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_bin_dir() -> Path:
    """The folder of the newest PostgreSQL server binaries (postgres, initdb, pg_ctl).

    Debian keeps them out of PATH, one folder per major version; elsewhere they are
    found on PATH.
    """
    import glob

    found = [Path(d) for d in glob.glob(POSTGRES_BIN_GLOB) if (Path(d) / "postgres").exists()]
    if found:
        return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise MissingToolError("postgres", _PURPOSE["postgres"], _FIX["postgres"])


@dataclass(frozen=True)
class Part:
    """One cached, versioned part of the stack."""

    name: str
    version: str
    cache_dir: Path

    @property
    def home(self) -> Path:
        return self.cache_dir / f"{self.name}-{self.version}"

    @property
    def ready(self) -> bool:
        return (self.home / _MARKER).exists()


def kafka_part(cache_dir: Path) -> Part:
    return Part("kafka", versions.KAFKA, cache_dir)


def spark_jars_part(cache_dir: Path) -> Part:
    """Spark's Kafka source and S3A: where the jobs look by default (spark.jvm)."""
    return Part(*JAR_PARTS[0], cache_dir)


def delta_jars_part(cache_dir: Path) -> Part:
    """Delta Lake's jars: where the jobs look by default (spark.jvm)."""
    return Part(*JAR_PARTS[1], cache_dir)


def minio_part(cache_dir: Path) -> Part:
    return Part("minio", versions.MINIO, cache_dir)


def kafka_classpath(cache_dir: Path) -> str:
    return str(kafka_part(cache_dir).home / "libs" / "*")


def minio_binary(cache_dir: Path) -> Path:
    return minio_part(cache_dir).home / "bin" / "minio"


# Maven -----------------------------------------------------------------------------------


def _pom(artifact: str, deps: Iterable[tuple[str, str, str]]) -> str:
    body = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        f"  <groupId>io.stockpipe.setup</groupId><artifactId>{artifact}</artifactId>"
        "<version>1</version><packaging>pom</packaging>\n"
        f"  <dependencies>\n{body}\n  </dependencies>\n</project>\n"
    )


def _run_streaming(cmd: list[str], *, what: str, log: Path, cwd: Path, env=None, unit="lines"):
    """Run a long command, showing progress, keeping its full output in ``log``."""
    with (
        log.open("w") as out,
        tqdm(
            desc=what,
            unit=f" {unit}",
            leave=False,
            dynamic_ncols=True,
            mininterval=0.2 if sys.stderr.isatty() else 30,  # CI logs: a line per 30 s
        ) as bar,
    ):
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if unit == "jars" and line.startswith("Downloaded from"):
                bar.update(1)
                bar.set_postfix_str(line.rsplit("/", 1)[-1].strip()[:50])
            elif unit == "packages":
                bar.update(1)
        rc = proc.wait()
    return rc


def _maven_fetch(part: Part, deps, exclude: list[str], what: str, keep: str = "") -> None:
    """Fetch ``deps`` with their runtime dependencies; with ``keep``, only jars named so."""
    mvn = require_tool("mvn")
    part.cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{part.name}-", dir=part.cache_dir))
    try:
        (staging / "pom.xml").write_text(_pom(part.name, deps))
        out_dir = staging / ("libs" if part.name == "kafka" else "jars")
        cmd = [
            mvn,
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        if exclude:
            cmd.append("-DexcludeArtifactIds=" + ",".join(exclude))
        log = part.cache_dir / f"{part.name}-{part.version}.log"
        rc = _run_streaming(cmd, what=what, log=log, cwd=staging, unit="jars")
        if rc != 0:
            raise SetupError(
                f"Maven could not fetch {what} ({part.name} {part.version}); "
                f"its output is in {log}.",
                fix="check the network to Maven Central and run `make setup` again to retry",
            )
        for jar in out_dir.glob("*.jar") if keep else ():
            if not jar.name.startswith(keep):
                jar.unlink()
        _publish(staging, part)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, part: Part) -> None:
    """Move a finished staging folder into place and mark it complete."""
    (staging / _MARKER).write_text(part.version + "\n")
    if part.home.exists():
        shutil.rmtree(part.home)
    staging.rename(part.home)


def fetch_kafka(cache_dir: Path) -> Part:
    part = kafka_part(cache_dir)
    if part.ready:
        return part
    deps = [
        ("org.apache.kafka", f"kafka_{versions.SCALA}", versions.KAFKA),
        ("org.apache.kafka", "kafka-tools", versions.KAFKA),  # ProducerPerformance for bench/
        ("org.slf4j", "slf4j-api", versions.SLF4J),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", versions.LOG4J),
        ("org.apache.logging.log4j", "log4j-core", versions.LOG4J),
    ]
    _maven_fetch(part, deps, [], f"Kafka {versions.KAFKA} broker jars")
    return part


def fetch_spark_jars(cache_dir: Path) -> Part:
    part = spark_jars_part(cache_dir)
    if part.ready:
        return part
    deps = [
        ("org.apache.spark", f"spark-sql-kafka-0-10_{versions.SCALA}", versions.SPARK),
        ("org.apache.hadoop", "hadoop-aws", versions.HADOOP),
    ]
    # Already inside pyspark/jars: never put a second copy on the classpath.
    exclude = [
        "hadoop-client-runtime",
        "hadoop-client-api",
        "scala-library",
        f"scala-parallel-collections_{versions.SCALA}",
        "slf4j-api",
        "snappy-java",
        "lz4-java",
        "jsr305",
        f"spark-tags_{versions.SCALA}",
    ]
    _maven_fetch(part, deps, exclude, f"Spark {versions.SPARK} Kafka + S3A jars")
    return part


def fetch_delta_jars(cache_dir: Path) -> Part:
    part = delta_jars_part(cache_dir)
    if part.ready:
        return part
    major_minor = ".".join(versions.SPARK.split(".")[:2])
    deps = [("io.delta", f"delta-spark_{major_minor}_{versions.SCALA}", versions.DELTA)]
    # Spark's own jars (pyspark/jars) provide the rest; Delta's POM would add a
    # second Hadoop client and Parquet beside them
    exclude = ["hadoop-client-api", "hadoop-client-runtime", "unitycatalog-client"]
    _maven_fetch(part, deps, exclude, f"Delta Lake {versions.DELTA} jars", keep="delta-")
    return part


# Go --------------------------------------------------------------------------------------


def build_minio(cache_dir: Path) -> Part:
    return go_build(
        minio_part(cache_dir),
        module=versions.MINIO_MODULE,
        binary="minio",
        what=f"building MinIO {versions.MINIO} (a few minutes)",
    )


def go_build(part: Part, *, module: str, binary: str, what: str, package: str = ".") -> Part:
    """Build ``binary`` from ``module``'s ``package`` at ``part.version`` into the cache."""
    if part.ready:
        return part
    go = require_tool("go")
    cache_dir = part.cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{part.name}-", dir=cache_dir))
    env = {**os.environ, "GOBIN": str(staging / "bin"), "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    log = cache_dir / f"{part.name}-{part.version}.log"
    sub = "" if package == "." else "/" + package.removeprefix("./")
    target = f"{module}{sub}@{part.version}"
    try:
        rc = _run_streaming(
            [go, "install", "-v", target], what=what, log=log, cwd=staging, env=env, unit="packages"
        )
        installed = staging / "bin" / (sub.rsplit("/", 1)[-1] or module.rsplit("/", 1)[-1])
        if rc == 0 and installed.name != binary:
            installed.rename(staging / "bin" / binary)
        if rc != 0 and "must not contain directives" in log.read_text():
            out = staging / "bin" / binary
            rc = _build_in_module_cache(
                go, f"{module}@{part.version}", package, out, env, log, what
            )
        if rc != 0:
            raise SetupError(
                f"`go install {target}` failed; its output is in {log}.",
                fix="check the network to the Go module proxy and run the command again",
            )
        _publish(staging, part)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return part


def _build_in_module_cache(go, module_at, package, out, env, log, what) -> int:
    """`go install` refuses modules with replace or exclude directives: build inside it."""
    import json

    info = subprocess.run(
        [go, "mod", "download", "-json", module_at], env=env, capture_output=True, text=True
    )
    if info.returncode != 0:
        log.write_text(log.read_text() + info.stdout + info.stderr)
        return info.returncode
    src = Path(json.loads(info.stdout)["Dir"])
    return _run_streaming(
        [go, "build", "-v", "-o", str(out), package],
        what=what,
        log=log,
        cwd=src,
        env=env,
        unit="packages",
    )


def setup_all(cache_dir: Path, *, quiet_when_ready: bool = True) -> list[Part]:
    """Fetch and build everything missing; print one line per part that was done."""
    require_tool("java")
    steps = [
        (kafka_part, fetch_kafka),
        (spark_jars_part, fetch_spark_jars),
        (delta_jars_part, fetch_delta_jars),
        (minio_part, build_minio),
    ]
    parts = []
    for part_of, make in steps:
        part = part_of(cache_dir)
        if part.ready:
            if not quiet_when_ready:
                print(f"  {part.name} {part.version}: cached in {part.home}")
            parts.append(part)
            continue
        print(f"  {part.name} {part.version}: fetching into {part.home} ...", flush=True)
        done = make(cache_dir)
        size = sum(f.stat().st_size for f in done.home.rglob("*") if f.is_file())
        print(f"  {part.name} {part.version}: ready ({size / 1e6:.0f} MB)", flush=True)
        parts.append(done)
    return parts
