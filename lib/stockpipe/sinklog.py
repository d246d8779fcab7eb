"""Read Spark's file-sink commit log (``_spark_metadata``) outside Spark.

A Structured Streaming file sink writes data files first and then records them
in ``<path>/_spark_metadata/<batch>``; files of a micro-batch that never
committed (a killed query) are on storage but not in the log. Spark readers
consult the log; this module lets pyarrow/pandas readers do the same, so they
see exactly the committed rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Protocol

_BATCH = re.compile(r"^(\d+)(\.compact)?$")


class _FS(Protocol):  # the part of fsspec we use
    def ls(self, path: str, detail: bool = ...) -> list: ...
    def cat(self, path: str) -> bytes: ...
    def exists(self, path: str) -> bool: ...


def parse_log_file(text: str) -> list[dict]:
    """Entries of one log file: a version line (``v1``), then one JSON object per line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    if not lines[0].startswith("v"):
        raise ValueError(f"not a Spark sink log file (first line {lines[0][:20]!r})")
    return [json.loads(ln) for ln in lines[1:]]


def replay(files: Iterable[tuple[int, bool, str]]) -> list[str]:
    """Committed paths from ``(batch, is_compact, text)`` log files.

    The newest compact file holds everything up to its batch; later delta files
    add (or delete) paths.
    """
    ordered = sorted(files, key=lambda f: f[0])
    compacts = [f for f in ordered if f[1]]
    start = compacts[-1][0] if compacts else -1
    live: dict[str, None] = {}
    for batch, is_compact, text in ordered:
        if batch < start or (batch == start and not is_compact):
            continue
        for entry in parse_log_file(text):
            if entry.get("action", "add") == "add":
                live[entry["path"]] = None
            else:
                live.pop(entry["path"], None)
    return list(live)


def _strip_scheme(path: str) -> str:
    return re.sub(r"^[a-z0-9]+://", "", path)


def committed_files(fs: _FS, path: str) -> list[str] | None:
    """Committed data files under a file-sink ``path`` (no scheme), or None if no log.

    None means the directory was not written by a streaming file sink, and the
    caller should fall back to listing it.
    """
    log_dir = f"{path.rstrip('/')}/_spark_metadata"
    if not fs.exists(log_dir):
        return None
    files = []
    for name in fs.ls(log_dir, detail=False):
        base = name.rsplit("/", 1)[-1]
        m = _BATCH.match(base)
        if m:
            files.append((int(m.group(1)), bool(m.group(2)), name))
    compacts = [f for f in files if f[1]]
    start = max((f[0] for f in compacts), default=-1)
    wanted = [f for f in files if f[0] > start or (f[0] == start and f[1])]
    texts = [(b, c, fs.cat(n).decode()) for b, c, n in wanted]
    return [_strip_scheme(p) for p in replay(texts)]
