"""Base images made here, for machines that reach Debian's packages but no image registry.

A minimal Debian root file system is bootstrapped once from Debian's mirror
(``debootstrap --variant=minbase``), kept as a tarball in the per-user cache keyed
by the release, and imported into an engine as ``stockpipe/debian:<release>``;
every image of the local build mode starts from it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from stockpipe import versions
from stockpipe.errors import SetupError
from stockpipe.stack import install

MIRROR = "http://deb.debian.org/debian"


def base_tag() -> str:
    return f"stockpipe/debian:{versions.DEBIAN}"


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


def ensure_base_image(host: str, cache_dir: Path) -> str:
    """``stockpipe/debian:<release>`` in the engine at ``host``; its tag."""
    tag = base_tag()
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
