"""A small table format on S3: immutable data directories plus one manifest.

S3 has no atomic rename, so a Spark write can be seen half-done and a failed
write leaves files behind. Every write here goes to a new directory
(``.../run=<id>/``) that nobody reads yet; the change becomes visible only when
the manifest (one JSON object, replaced by a single PUT, which S3 makes atomic)
names it. Readers, in Spark or pyarrow, list files from the manifest, so they
see either the old or the new version, never a mix, never leftovers.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq

from stockpipe.config import Settings
from stockpipe.lake import filesystem, zone

MANIFEST = "_manifest.json"
HISTORY = "_manifests"
DATA_FILE_SUFFIXES = (".parquet",)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


@dataclass
class Manifest:
    """What is committed: partition -> data directory, plus job bookkeeping."""

    version: int = 0
    partitions: dict[str, dict[str, Any]] | None = (
        None  # "interval=1d/year=2024" -> {dir, files, rows}
    )
    extra: dict[str, Any] | None = None  # e.g. applied batches, raw/quarantine dirs
    updated_at: str = ""

    def __post_init__(self) -> None:
        self.partitions = self.partitions or {}
        self.extra = self.extra or {}

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "updated_at": self.updated_at,
                "partitions": self.partitions,
                "extra": self.extra,
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        return cls(d["version"], d.get("partitions"), d.get("extra"), d.get("updated_at", ""))

    @property
    def rows(self) -> int:
        return sum(p.get("rows", 0) for p in (self.partitions or {}).values())


def partition_values(key: str) -> dict[str, str]:
    """``"interval=1d/year=2024"`` -> ``{"interval": "1d", "year": "2024"}``."""
    return dict(part.split("=", 1) for part in key.split("/") if "=" in part)


class Table:
    """One managed table in the lake (e.g. ``processed/bars``)."""

    def __init__(self, settings: Settings, zone_name: str) -> None:
        self.settings = settings
        self.zone_name = zone_name
        self.root = zone(settings, zone_name)  # bucket/prefix, for s3fs/pyarrow
        self.spark_root = zone(settings, zone_name, spark=True)
        self.fs = filesystem(settings)

    # reading -----------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        try:
            return Manifest.from_json(self.fs.cat(f"{self.root}/{MANIFEST}").decode())
        except FileNotFoundError:
            return Manifest()

    def files(self, manifest: Manifest | None = None, **filters: Any) -> list[str]:
        """Committed data files (no scheme), only of partitions matching ``filters``.

        A filter value may be a single value or a collection; partition pruning
        happens here, before any file is opened.
        """
        manifest = manifest or self.manifest()
        out: list[str] = []
        for key, entry in sorted((manifest.partitions or {}).items()):
            values = partition_values(key)
            if all(_matches(values.get(k), v) for k, v in filters.items()):
                out.extend(entry["files"])
        return out

    # writing -----------------------------------------------------------------------------
    def list_data_files(self, directory: str) -> list[str]:
        """Data files Spark left in a finished write directory (no scheme)."""
        directory = directory.removeprefix("s3a://")
        found = self.fs.find(directory)
        return sorted(f for f in found if f.endswith(DATA_FILE_SUFFIXES) and "/_" not in f)

    def file_rows(self, files: list[str]) -> dict[str, int]:
        """Rows per data file, from the Parquet footers (no data is read)."""

        def rows(path: str) -> int:
            with self.fs.open(path, "rb") as f:
                return pq.read_metadata(f).num_rows

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(files, pool.map(rows, files), strict=True))

    def written_partitions(self, directory: str, depth: int) -> dict[str, dict[str, Any]]:
        """Manifest entries for what a finished ``partitionBy`` write left in ``directory``.

        ``depth`` is the number of partition columns; the key of an entry is the
        partition path below ``directory`` (``"interval=1d/year=2024"``). Row
        counts come from the footers, so the caller needs no extra Spark pass.
        """
        directory = directory.removeprefix("s3a://").rstrip("/")
        files = self.list_data_files(directory)
        counts = self.file_rows(files)
        entries: dict[str, dict[str, Any]] = {}
        for f in files:
            part = "/".join(f[len(directory) + 1 :].split("/")[:depth])
            e = entries.setdefault(part, {"dir": f"{directory}/{part}", "files": [], "rows": 0})
            e["files"].append(f)
            e["rows"] += counts[f]
        return entries

    def commit(
        self,
        base: Manifest,
        partitions: dict[str, dict[str, Any]],
        extra: dict[str, Any] | None = None,
        removed: list[str] | None = None,
    ) -> Manifest:
        """Publish a new version that replaces ``partitions`` (atomically).

        ``base`` must be the version the change was computed from: a concurrent
        writer that committed in between makes this raise instead of losing its
        work.
        """
        current = self.manifest()
        if current.version != base.version:
            raise RuntimeError(
                f"{self.root} changed while this job ran (version {base.version} -> "
                f"{current.version}); run the job again"
            )
        new_parts = {**(base.partitions or {}), **partitions}
        for key in removed or []:
            new_parts.pop(key, None)
        new = Manifest(
            version=base.version + 1,
            partitions=new_parts,
            extra={**(base.extra or {}), **(extra or {})},
            updated_at=datetime.now(UTC).isoformat(),
        )
        text = new.to_json().encode()
        self.fs.pipe(f"{self.root}/{HISTORY}/v{new.version:08d}.json", text)
        self.fs.pipe(f"{self.root}/{MANIFEST}", text)  # the single atomic switch
        return new

    def vacuum(self, keep_versions: int = 2) -> list[str]:
        """Delete ``run=…`` directories that none of the last ``keep_versions`` manifests name.

        Keeping the previous version lets a reader that fetched the old manifest a
        moment ago finish reading its files.
        """
        try:
            versions = sorted(self.fs.ls(f"{self.root}/{HISTORY}", detail=False))
        except FileNotFoundError:
            return []
        keep: set[str] = set()
        for path in versions[-keep_versions:]:
            m = Manifest.from_json(self.fs.cat(path).decode())
            keep.update(e["dir"] for e in (m.partitions or {}).values())
        removed = []
        for d in self.fs.ls(self.root, detail=False):
            name = d.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith("run=") or any(k.startswith(d.rstrip("/") + "/") for k in keep):
                continue
            self.fs.rm(d, recursive=True)
            removed.append(d)
        return removed


def _matches(actual: str | None, wanted: Any) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, list | tuple | set | frozenset):
        return actual in {str(w) for w in wanted}
    return actual == str(wanted)
