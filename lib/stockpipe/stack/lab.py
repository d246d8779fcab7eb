"""`make lab`: JupyterLab on the notebooks, with the project kernel and the stack's settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stockpipe.config import PROJECT_ROOT, Settings, child_environ
from stockpipe.errors import StackError


def lab_command(settings: Settings) -> list[str]:
    """JupyterLab bound to 127.0.0.1, rooted at notebooks/, no browser (token URL printed).

    The extension manager is read-only: the lab never asks PyPI for anything.
    """
    args = [
        str(Path(sys.executable).with_name("jupyter")),
        "lab",
        f"--ServerApp.ip={settings.host}",
        f"--ServerApp.port={settings.lab_port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={PROJECT_ROOT / 'notebooks'}",
        "--MultiKernelManager.default_kernel_name=stockpipe",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # containers and CI often run as root; Jupyter refuses by default
        args.append("--ServerApp.allow_root=True")
    return args


def run_lab(settings: Settings) -> None:
    """Replace this process with JupyterLab; kernels inherit the settings (the same stack)."""
    from stockpipe.stack.services import port_is_free

    if not port_is_free(settings.host, settings.lab_port):
        raise StackError(
            f"port {settings.lab_port} on {settings.host} is in use; set STOCKPIPE_LAB_PORT "
            "in .env to another port"
        )
    cmd = lab_command(settings)
    os.chdir(PROJECT_ROOT / "notebooks")
    os.umask(0o077)  # what the lab and its kernels write is private
    os.execve(cmd[0], cmd, child_environ(settings))
