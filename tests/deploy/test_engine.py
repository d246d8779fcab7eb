"""The Compose deployment's engine, for real: a private dockerd (or the machine's) runs
containers on a user-defined network where they reach each other by name, and a
private one leaves no process behind when stopped."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stockpipe.stack.engine import engine, start_engine, stop_engine, system_host
from stockpipe.stack.manager import isolated_settings


@pytest.fixture(scope="module")
def docker() -> Iterator[tuple[str, object]]:
    state = Path(tempfile.mkdtemp(prefix="stockpipe-engine-"))
    settings = isolated_settings(state)
    # its own data root: `make test-deploy` runs beside the project's engine, which owns
    # the cached one
    host = start_engine(settings, log=lambda _m: None, data_root=state / "docker-data")
    try:
        yield host, settings
    finally:
        stop_engine(settings)
        shutil.rmtree(state, ignore_errors=True)


def _docker(host: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "--host", host, *args], capture_output=True, text=True, timeout=120, **kw
    )


def _busybox_image(host: str, tag: str) -> None:
    """An image made here from Debian's static busybox (no registry is reachable)."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox not found: apt-get install busybox-static"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "httpd", "wget", "mkdir", "echo"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    res = subprocess.run(
        ["docker", "--host", host, "import", "-", tag], input=buf.getvalue(), capture_output=True
    )
    assert res.returncode == 0, res.stderr


def test_containers_on_a_network_reach_each_other_by_name(docker):
    host, _settings = docker
    run = uuid.uuid4().hex[:8]
    image, net = f"stockpipe-test/busybox:{run}", f"stockpipe-test-{run}"
    _busybox_image(host, image)
    assert _docker(host, "network", "create", net).returncode == 0
    try:
        page = f"hello from {run}"
        serve = f"mkdir /www && echo '{page}' > /www/index.html && httpd -f -p 8080 -h /www"
        server = _docker(
            host, "run", "-d", "--rm", "--name", f"web-{run}", "--network", net, image,
            "/bin/sh", "-c", serve,
        )  # fmt: skip
        assert server.returncode == 0, server.stderr
        fetch = f"for i in 1 2 3 4 5; do wget -qO- http://web-{run}:8080/ && exit 0; sleep 1; done"
        client = _docker(
            host, "run", "--rm", "--network", net, image, "/bin/sh", "-c", f"{fetch}; exit 1"
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.strip() == page
    finally:
        _docker(host, "rm", "-f", f"web-{run}")
        _docker(host, "network", "rm", net)
        _docker(host, "rmi", image)


def test_a_private_engine_is_private_and_leaves_nothing_when_stopped(docker):
    host, settings = docker
    if system_host() == host:
        pytest.skip("the machine's own Docker engine is in use; nothing private to check")
    own = engine(settings)
    pid = own.pid()
    assert pid is not None and host == own.host
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    names = {p.name() for p in tree}
    assert "dockerd" in names and any(n.startswith("containerd") for n in names), names
    cmdline = " ".join(psutil.Process(pid).cmdline())
    assert "--iptables=false" in cmdline and str(settings.state_dir) in cmdline
    listening = [c for p in tree for c in p.net_connections("inet") if c.status == "LISTEN"]
    assert listening == []  # a Unix socket only: no TCP port at all
    assert stop_engine(settings)
    _gone, alive = psutil.wait_procs(tree, timeout=30)
    assert alive == []
    assert own.pid() is None and not own.socket.exists()
    start_engine(settings, log=lambda _m: None, data_root=settings.state_dir / "docker-data")


def test_the_root_file_system_image_is_debian_bootstrapped_here(docker):
    from stockpipe import versions
    from stockpipe.stack.images import ensure_rootfs_image, rootfs_tag

    host, settings = docker
    tag = ensure_rootfs_image(host, settings.cache_dir)
    assert tag == rootfs_tag()
    res = _docker(
        host, "run", "--rm", tag, "/bin/sh", "-c", "cat /etc/os-release; command -v apt-get"
    )
    assert res.returncode == 0, res.stderr
    assert f"VERSION_CODENAME={versions.DEBIAN}" in res.stdout
    assert res.stdout.strip().endswith("/usr/bin/apt-get")
