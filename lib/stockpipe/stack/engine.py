"""A Docker engine for the Compose deployment: the machine's own, or a private dockerd.

Where a Docker engine already answers (``DOCKER_HOST`` or ``/var/run/docker.sock``),
it is used. Otherwise, as root, the project runs its own ``dockerd`` from Debian's
``docker.io``: socket and run state under the state directory, images and containers
in the per-user cache keyed by the engine's version, no iptables rules and no IP
masquerading, nothing system-wide changed. Compose is built from the Go proxy
(cached by version), as MinIO is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stockpipe import versions
from stockpipe.config import Settings
from stockpipe.errors import MissingToolError, StackError
from stockpipe.stack import install
from stockpipe.stack.services import Service

SYSTEM_SOCKET = Path("/var/run/docker.sock")


def engine_version() -> str:
    """The installed dockerd's version (the key of its data root in the cache)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise MissingToolError(
            "dockerd",
            "runs the Compose deployment's containers",
            "`make engine-start` installs Debian's docker.io as root",
        )
    out = subprocess.run([dockerd, "--version"], capture_output=True, text=True, check=True)
    # "Docker version 20.10.24+dfsg1, build 5d6db84"
    return out.stdout.split()[2].rstrip(",").split("+")[0]


def answers(host: str) -> bool:
    """A Docker engine answers at ``host`` (a ``unix://`` or ``tcp://`` address)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    res = subprocess.run(
        [docker, "--host", host, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return res.returncode == 0 and bool(res.stdout.strip())


@dataclass
class DockerEngine(Service):
    """The project's own dockerd (root only): private socket, data and exec roots."""

    #: Where images and containers live; default: the per-user cache, keyed by version.
    #: Two engines never share one (a test's throwaway engine gets its own).
    own_data_root: Path | None = None

    def __post_init__(self) -> None:
        self.marker = str(self.socket)

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        return self.own_data_root or self.settings.cache_dir / f"docker-{engine_version()}"

    @property
    def main_port(self) -> int:
        return 0  # a Unix socket, no TCP port

    def command(self) -> tuple[list[str], dict[str, str]]:
        if os.geteuid() != 0:
            raise StackError("a private Docker engine needs root; or start Docker yourself")
        dockerd = install.require_tool("dockerd")
        self.data_root.mkdir(parents=True, exist_ok=True)
        cmd = [
            dockerd,
            "--host",
            self.host,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.dir / "exec"),
            "--pidfile",
            str(self.dir / "dockerd.pid"),
            "--iptables=false",  # no rules in the machine's firewall
            "--ip-masq=false",
            "--ip6tables=false",
        ]
        return cmd, {}

    def healthy(self) -> bool:
        return self.socket.exists() and answers(self.host)


def system_host() -> str | None:
    """The address of a Docker engine the machine already runs, if one answers."""
    for host in filter(None, [os.environ.get("DOCKER_HOST"), f"unix://{SYSTEM_SOCKET}"]):
        if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
            continue
        if answers(host):
            return host
    return None


def engine(settings: Settings, data_root: Path | None = None) -> DockerEngine:
    return DockerEngine("docker", settings, own_data_root=data_root)


def start_engine(settings: Settings, log=print, data_root: Path | None = None) -> str:
    """A Docker host to use: the machine's engine, or the private one, started if needed."""
    host = system_host()
    if host:
        log(f"using the machine's Docker engine at {host}")
        return host
    own = engine(settings, data_root)
    if own.pid() is None:
        pid = own.start()
        log(f"started a private dockerd (pid {pid}, socket {own.socket}, data {own.data_root})")
        own.wait_healthy(120)
    return own.host


def stop_engine(settings: Settings) -> bool:
    """Stop the private dockerd (and the containerd it started). True if it ran."""
    return engine(settings).stop(timeout=60)


def compose_part(cache_dir: Path) -> install.Part:
    return install.Part("docker-compose", versions.COMPOSE, cache_dir)


def compose_binary(cache_dir: Path) -> Path:
    return compose_part(cache_dir).home / "bin" / "docker-compose"


def build_compose(cache_dir: Path) -> install.Part:
    """Docker Compose v2 from the Go module proxy (cached by version)."""
    return install.go_build(
        compose_part(cache_dir),
        module=versions.COMPOSE_MODULE,
        package="./cmd",
        binary="docker-compose",
        what=f"building Docker Compose {versions.COMPOSE} (a few minutes)",
    )
