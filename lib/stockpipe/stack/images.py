"""Base images made here, for machines that reach Debian's packages but no image registry.

A minimal Debian root file system is bootstrapped once from Debian's mirror
(``debootstrap --variant=minbase``), kept as a tarball in the per-user cache keyed
by the release, and imported into an engine as ``stockpipe/debian-rootfs:<release>``.
The local build mode builds every image of the deployment from it: stand-ins for the
official images (docker/local/, with the same paths, users and entrypoint contracts),
then the project's own Dockerfiles with their base-image arguments pointed at them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from stockpipe import versions
from stockpipe.config import PROJECT_ROOT
from stockpipe.errors import SetupError
from stockpipe.stack import install

MIRROR = "http://deb.debian.org/debian"


def base_tag() -> str:
    """The base of every local image: the root file system plus the CA certificates."""
    return f"stockpipe/debian:{versions.DEBIAN}"


def rootfs_tag() -> str:
    return f"stockpipe/debian-rootfs:{versions.DEBIAN}"


#: The machine's own CA certificates (a TLS-inspecting proxy's among them), trusted in builds.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


def rootfs_part(cache_dir: Path) -> install.Part:
    return install.Part("debian-rootfs", f"{versions.DEBIAN}-minbase", cache_dir)


def rootfs_tarball(cache_dir: Path) -> Path:
    """The bootstrapped root file system (made once; root only, as debootstrap is)."""
    part = rootfs_part(cache_dir)
    tarball = part.home / "rootfs.tar"
    if part.ready:
        return tarball
    debootstrap = install.require_tool("debootstrap")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".debian-rootfs-", dir=cache_dir))
    root = staging / "root"
    log = cache_dir / f"{part.name}-{part.version}.log"
    try:
        with log.open("w") as out:
            res = subprocess.run(
                [debootstrap, "--variant=minbase", versions.DEBIAN, str(root), MIRROR],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if res.returncode != 0:
            raise SetupError(
                f"debootstrap of Debian {versions.DEBIAN} failed; its output is in {log}.",
                fix="check the network to deb.debian.org and run the command again",
            )
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(staging / "rootfs.tar"), "."],
            check=True,
        )
        shutil.rmtree(root)
        install._publish(staging, part)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tarball


def has_image(host: str, tag: str) -> bool:
    res = subprocess.run(
        ["docker", "--host", host, "image", "inspect", tag], capture_output=True, text=True
    )
    return res.returncode == 0


def ensure_rootfs_image(host: str, cache_dir: Path) -> str:
    """``stockpipe/debian-rootfs:<release>`` in the engine at ``host``; its tag."""
    tag = rootfs_tag()
    if has_image(host, tag):
        return tag
    tarball = rootfs_tarball(cache_dir)
    res = subprocess.run(
        ["docker", "--host", host, "import", "--change", 'CMD ["/bin/bash"]', str(tarball), tag],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise SetupError(f"`docker import` of {tarball} failed: {res.stderr.strip()}")
    return tag


# The local build mode ------------------------------------------------------------------

DOCKER_DIR = PROJECT_ROOT / "docker"
LOCAL_DIR = DOCKER_DIR / "local"

#: Stand-ins for the official images, with their contracts (docker/local/*.Dockerfile).
KAFKA_IMAGE = f"stockpipe/kafka:{versions.KAFKA}-local"
POSTGRES_IMAGE = "stockpipe/postgres:debian-local"
AIRFLOW_IMAGE = "stockpipe/airflow:python3.11-local"
SPARK_IMAGE = f"stockpipe/spark-base:{versions.SPARK}-local"
GO_IMAGE = f"stockpipe/minio-build:{versions.MINIO}-local"
#: The images compose.yaml names for what it builds itself (a unit test keeps them equal).
PROJECT_IMAGE = "stockpipe/project:dev"
SPARK_SERVICE_IMAGE = f"stockpipe/spark:{versions.SPARK}"
MINIO_IMAGE = f"stockpipe/minio:{versions.MINIO}"


@dataclass(frozen=True)
class Build:
    """One ``docker build``: a Dockerfile, its context, and the cached parts staged into it."""

    tag: str
    dockerfile: Path
    context: Path | None = None  # None: a context staged from `files` only
    files: dict[str, Path] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)


def compose_image_env() -> dict[str, str]:
    """The variables that point docker/compose.yaml at the local mode's images."""
    return {
        "KAFKA_IMAGE": KAFKA_IMAGE,
        "POSTGRES_IMAGE": POSTGRES_IMAGE,
        "AIRFLOW_IMAGE": AIRFLOW_IMAGE,
        "SPARK_IMAGE": SPARK_IMAGE,
        "GO_IMAGE": GO_IMAGE,
        "DEBIAN_IMAGE": base_tag(),
    }


def local_builds(cache_dir: Path) -> list[Build]:
    """Every image of the deployment, in build order, from the base image and the caches."""
    base = {"BASE_IMAGE": base_tag()}

    def local(name: str) -> Path:
        return LOCAL_DIR / name

    return [
        Build(
            base_tag(),
            local("debian.Dockerfile"),
            files={"ca": LOCAL_CA_DIR},
            args={"ROOTFS_IMAGE": rootfs_tag()},
        ),
        Build(
            KAFKA_IMAGE,
            local("kafka.Dockerfile"),
            files={
                "libs": install.kafka_part(cache_dir).home / "libs",
                "kafka-entrypoint.sh": local("kafka-entrypoint.sh"),
            },
            args=base,
        ),
        Build(
            POSTGRES_IMAGE,
            local("postgres.Dockerfile"),
            files={"postgres-entrypoint.sh": local("postgres-entrypoint.sh")},
            args=base,
        ),
        Build(
            GO_IMAGE,
            local("minio-build.Dockerfile"),
            files={"minio": install.minio_binary(cache_dir)},
            args=base,
        ),
        Build(
            AIRFLOW_IMAGE,
            local("airflow.Dockerfile"),
            files={"airflow-entrypoint.sh": local("airflow-entrypoint.sh")},
            args=base,
        ),
        Build(
            SPARK_IMAGE, local("spark.Dockerfile"), args={**base, "SPARK_VERSION": versions.SPARK}
        ),
        Build(
            MINIO_IMAGE,
            DOCKER_DIR / "minio" / "Dockerfile",
            DOCKER_DIR / "minio",
            args={
                "GO_IMAGE": GO_IMAGE,
                "DEBIAN_IMAGE": base_tag(),
                "MINIO_VERSION": versions.MINIO,
            },
        ),
        Build(
            PROJECT_IMAGE,
            DOCKER_DIR / "Dockerfile",
            PROJECT_ROOT,
            args={"AIRFLOW_IMAGE": AIRFLOW_IMAGE},
        ),
        Build(
            SPARK_SERVICE_IMAGE,
            DOCKER_DIR / "spark" / "Dockerfile",
            DOCKER_DIR / "spark",
            args={"SPARK_IMAGE": SPARK_IMAGE, "PROJECT_IMAGE": PROJECT_IMAGE},
        ),
    ]


def _stage(build: Build, into: Path) -> Path:
    """A build context of hard links to the Dockerfile and the cached parts it copies."""
    into.mkdir(parents=True)
    shutil.copy2(build.dockerfile, into / "Dockerfile")
    for name, source in build.files.items():
        if source == LOCAL_CA_DIR:
            (into / name).mkdir()
            for cert in LOCAL_CA_DIR.glob("*.crt") if LOCAL_CA_DIR.is_dir() else []:
                shutil.copy2(cert, into / name / cert.name)
            continue
        if not source.exists():
            raise SetupError(
                f"{source} is missing for the image {build.tag}.", fix="run `make setup`"
            )
        if source.is_dir():
            shutil.copytree(source, into / name, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(source), str(into / name))
    return into


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def build_image(host: str, build: Build, cache_dir: Path, log: Path) -> float:
    """``docker build`` one image (the engine's classic builder, host network); seconds taken.

    The classic builder needs no buildx plugin and no image of a Dockerfile frontend; the
    host network lets the build reach Debian, PyPI and Maven Central although the engine
    adds no masquerading rules. Layers stay in the engine's cache: a rebuild of unchanged
    inputs takes seconds.
    """
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=".build-context-", dir=cache_dir))
    try:
        if build.context is None:
            context, dockerfile = _stage(build, staging / "context"), staging / "context/Dockerfile"
        else:
            context, dockerfile = build.context, build.dockerfile
        cmd = ["docker", "--host", host, "build", "--network", "host", "--tag", build.tag]
        cmd += ["--file", str(dockerfile)]
        for key, value in build.args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        with log.open("a") as out:
            out.write(f"\n$ {' '.join(cmd)} {context}\n")
            out.flush()
            res = subprocess.run(
                [*cmd, str(context)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
        if res.returncode != 0:
            raise SetupError(
                f"building the image {build.tag} failed; the build's output is in {log}.",
                fix="check the network to Debian's mirror and PyPI, then run the command again",
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.monotonic() - started


def build_local_images(host: str, cache_dir: Path, log_dir: Path, log=print) -> dict[str, float]:
    """The base image, the stand-ins and the deployment's images; seconds per image."""
    ensure_rootfs_image(host, cache_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    build_log = log_dir / "image-builds.log"
    build_log.write_text("")
    builds = local_builds(cache_dir)
    times: dict[str, float] = {}
    for i, build in enumerate(builds, 1):
        log(f"  [{i}/{len(builds)}] building {build.tag} ...")
        times[build.tag] = build_image(host, build, cache_dir, build_log)
        log(f"  [{i}/{len(builds)}] {build.tag}: built in {times[build.tag]:.0f} s")
    return times
