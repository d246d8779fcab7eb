"""The S3 lake: one place that knows the bucket, the zones and how to reach them.

Callers ask for a zone path; the scheme (``s3a://`` for Spark, ``s3://`` for
Delta readers outside Spark, none for pyarrow/s3fs) is chosen here, never in jobs.
Every zone but ``checkpoints``, ``notebooks``, ``reports`` and ``state`` is a Delta table.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from stockpipe.config import Settings

if TYPE_CHECKING:  # s3fs (aiobotocore, aiohttp) takes a second to import: on first use
    import s3fs

ZONES = {
    "raw_bars": "raw/bars",
    "raw_ticks": "raw/ticks",
    "processed_bars": "processed/bars",
    "tick_windows": "processed/tick_windows",
    "stream_metrics": "processed/stream_metrics",
    "quarantine_bars": "quarantine/bars",
    "quarantine_ticks": "quarantine/ticks",
    "checkpoints": "checkpoints",
    "notebooks": "notebooks",
    "reports": "reports",
    "state": "_state",
}

#: The zones that are Delta tables.
TABLES: tuple[str, ...] = (
    "raw_bars",
    "quarantine_bars",
    "processed_bars",
    "raw_ticks",
    "quarantine_ticks",
    "tick_windows",
    "stream_metrics",
)


def zone(settings: Settings, name: str, *, spark: bool = False) -> str:
    """Path of a zone: ``s3a://bucket/raw/bars`` for Spark, ``bucket/raw/bars`` otherwise."""
    from stockpipe.errors import UnknownNameError

    if name not in ZONES:
        raise UnknownNameError("lake zone", name, list(ZONES))
    path = f"{settings.bucket}/{ZONES[name]}"
    return f"s3a://{path}" if spark else path


def table_uri(settings: Settings, name: str) -> str:
    """URI of a Delta table for readers outside Spark (``deltalake``, polars, DuckDB)."""
    return f"s3://{zone(settings, name)}"


def storage_options(settings: Settings) -> dict[str, str]:
    """Storage options of ``deltalake`` and ``polars.read_delta`` for the lake.

    ``aws_conditional_put``: MinIO's conditional PUT makes a delta-rs commit atomic
    without a lock service.
    """
    return {
        "AWS_ENDPOINT_URL": settings.s3_url,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
        "AWS_REGION": settings.s3_region,
        "AWS_ALLOW_HTTP": str(settings.s3_url.startswith("http://")).lower(),
        "aws_conditional_put": "etag",
    }


def filesystem(settings: Settings) -> s3fs.S3FileSystem:
    """An s3fs filesystem for the lake (cached per endpoint and credentials)."""
    return _fs(
        settings.s3_url,
        settings.s3_access_key,
        settings.s3_secret_key.get_secret_value(),
        settings.s3_region,
    )


@lru_cache(maxsize=8)
def _fs(endpoint: str, key: str, secret: str, region: str) -> s3fs.S3FileSystem:
    import s3fs

    return s3fs.S3FileSystem(
        key=key,
        secret=secret,
        endpoint_url=endpoint,
        client_kwargs={"region_name": region},
        config_kwargs={"s3": {"addressing_style": "path"}},
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def ensure_bucket(settings: Settings) -> bool:
    """Create the lake bucket if missing (private: MinIO's default). True if created."""
    fs = filesystem(settings)
    if fs.exists(settings.bucket):
        return False
    fs.mkdir(settings.bucket, region_name=settings.s3_region)
    return True
