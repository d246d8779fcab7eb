"""Foundation benchmark: cold and warm setup, `up` to healthy, idle stack memory.

Cold setup runs `stockpipe setup` with empty caches of its own (stockpipe cache,
Maven repository, Go module and build caches in a temp folder), so it measures
real downloads and the MinIO build; pass --skip-cold to measure only the rest.
Goals: warm `up` to healthy <= 20 s; idle stack <= 2 GB resident.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import save, timed

from stockpipe.stack.manager import Stack, isolated_settings

VENV_BIN = Path(sys.executable).parent


def setup_time(env_extra: dict[str, str]) -> float:
    env = {**os.environ, **env_extra}
    t0 = time.perf_counter()
    subprocess.run([str(VENV_BIN / "stockpipe"), "setup"], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    results: dict = {"goals": {"warm_up_to_healthy_s": 20, "idle_stack_rss_mb": 2048}}

    if not args.skip_cold:
        tmp = Path(tempfile.mkdtemp(prefix="stockpipe-cold-"))
        cold_env = {
            "STOCKPIPE_CACHE_DIR": str(tmp / "cache"),
            "MAVEN_OPTS": f"-Dmaven.repo.local={tmp / 'm2'}",
            "GOMODCACHE": str(tmp / "gomod"),
            "GOCACHE": str(tmp / "gocache"),
            "GOFLAGS": "-modcacherw",
        }
        print("cold setup (empty caches: downloads + MinIO build) ...", flush=True)
        results["cold_setup_s"] = round(setup_time(cold_env), 1)
        print(f"  cold_setup_s: {results['cold_setup_s']}")
        results["warm_setup_s"] = round(setup_time(cold_env), 2)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        results["warm_setup_s"] = round(setup_time({}), 2)
    print(f"  warm_setup_s: {results['warm_setup_s']}")

    with tempfile.TemporaryDirectory(prefix="stockpipe-bench-") as tmp:
        settings = isolated_settings(Path(tmp))
        stack = Stack(settings)
        with timed(results, "first_up_to_healthy_s"):  # formats Kafka storage
            stack.up(log=lambda _m: None)
        stack.down(log=lambda _m: None)
        with timed(results, "warm_up_to_healthy_s"):
            stack.up(log=lambda _m: None)
        time.sleep(15)  # idle
        rss = {}
        for svc in stack.services:
            proc = psutil.Process(svc.pid())
            rss[svc.name] = (
                sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
            )
        results["idle_rss_mb"] = {k: round(v) for k, v in rss.items()}
        results["idle_stack_rss_mb"] = round(sum(rss.values()))
        print(f"  idle RSS: {results['idle_rss_mb']} total {results['idle_stack_rss_mb']} MB")
        stack.down(log=lambda _m: None)
    save("stack", results)


if __name__ == "__main__":
    main()
