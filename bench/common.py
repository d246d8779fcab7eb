"""Shared plumbing of the benchmarks: an isolated stack, timing, and JSON results."""

from __future__ import annotations

import contextlib
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil

from stockpipe.config import Settings
from stockpipe.stack.manager import Stack, isolated_settings

RESULTS = Path(__file__).parent / "results"


@contextlib.contextmanager
def isolated_stack(**overrides) -> Iterator[tuple[Settings, Stack]]:
    """A throwaway Kafka + MinIO + PostgreSQL on free ports (never the user's stack)."""
    with tempfile.TemporaryDirectory(prefix="stockpipe-bench-") as tmp:
        settings = isolated_settings(Path(tmp), **overrides)
        stack = Stack(settings)
        stack.started = stack.up(log=lambda _m: None)  # seconds per service
        try:
            yield settings, stack
        finally:
            stack.down(log=lambda _m: None)


@contextlib.contextmanager
def timed(results: dict, name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    results[name] = round(time.perf_counter() - t0, 3)
    print(f"  {name}: {results[name]:.2f} s", flush=True)


def machine() -> dict:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_avg_1m_at_start": psutil.getloadavg()[0],
    }


def save(name: str, results: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        **results,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"results written to {path}")
    return path
