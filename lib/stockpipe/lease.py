"""One writer per table: a lease object in the lake, taken by conditional PUT.

Delta's S3 log store is safe only while a single driver writes a table, so every
job that writes a table holds its lease (``_leases/<table>.json`` in the bucket)
for as long as it runs. Taking it is ``PUT If-None-Match: *`` (only one creator
wins); renewing it and taking over an expired one are ``PUT If-Match: <etag>``
(only the holder, or one of several contenders, wins). A crashed holder stops
renewing, and its lease expires after ``ttl_s``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from stockpipe.config import Settings
from stockpipe.errors import LeaseHeldError, LeaseLostError

log = logging.getLogger(__name__)

PREFIX = "_leases"
#: A lease nobody renewed for this long is free: a crashed job blocks others this long.
TTL_S = 60.0
#: Each holder renews its leases this often (well inside TTL_S).
RENEW_EVERY_S = 15.0


@lru_cache(maxsize=8)
def _client(endpoint: str, key: str, secret: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the lake (cached per endpoint and credentials)."""
    return _client(
        settings.s3_url,
        settings.s3_access_key,
        settings.s3_secret_key.get_secret_value(),
        settings.s3_region,
    )


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


@dataclass
class Holder:
    """Who holds a lease, as written in the lease object."""

    holder: str
    job: str
    host: str
    pid: int
    acquired_at: str
    expires_at: float

    @property
    def expired(self) -> bool:
        return time.time() > self.expires_at

    @property
    def acquired_ts(self) -> float:
        """When the holder took the lease (epoch seconds; renewals keep it)."""
        return datetime.fromisoformat(self.acquired_at).timestamp()

    def describe(self) -> str:
        left = self.expires_at - time.time()
        return (
            f"{self.job} (pid {self.pid} on {self.host}, since {self.acquired_at}, "
            f"lease {'expired' if left < 0 else f'expires in {left:.0f} s'})"
        )


class Lease:
    """The lease of one table (``name`` is its zone, e.g. ``processed/bars``)."""

    def __init__(
        self, settings: Settings, name: str, *, job: str = "", ttl_s: float = TTL_S
    ) -> None:
        self.settings = settings
        self.name = name
        self.key = f"{PREFIX}/{name.strip('/')}.json"
        self.job = job or "stockpipe job"
        self.ttl_s = ttl_s
        self.id = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost: str | None = None
        #: When this job took the lease: renewals keep it, so others see how long it ran
        self.acquired_at: str | None = None
        self._s3 = s3_client(settings)

    def _body(self) -> bytes:
        return json.dumps(
            {
                "holder": self.id,
                "job": self.job,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": self.acquired_at or datetime.now(UTC).isoformat(timespec="seconds"),
                "expires_at": time.time() + self.ttl_s,
            }
        ).encode()

    def current(self) -> tuple[Holder, str] | None:
        """The lease as stored, with its ETag; None when nobody holds it."""
        try:
            obj = self._s3.get_object(Bucket=self.settings.bucket, Key=self.key)
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return Holder(**json.loads(obj["Body"].read())), obj["ETag"]

    def _put(self, **condition: str) -> bool:
        try:
            r = self._s3.put_object(
                Bucket=self.settings.bucket, Key=self.key, Body=self._body(), **condition
            )
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        self.etag = r["ETag"]
        return True

    def try_acquire(self) -> Holder | None:
        """Take the lease if free or expired; else return who holds it."""
        self.acquired_at = datetime.now(UTC).isoformat(timespec="seconds")
        if self._put(IfNoneMatch="*"):
            return None
        found = self.current()
        if found is None:  # released in between
            return None if self._put(IfNoneMatch="*") else self.current_holder()
        holder, etag = found
        if holder.expired:
            if holder.expires_at > 0:  # 0: released, not left behind by a crash
                log.warning("lease of %s held by %s: taking it over", self.name, holder.describe())
            if self._put(IfMatch=etag):
                return None
            return self.current_holder()
        return holder

    def current_holder(self) -> Holder | None:
        found = self.current()
        return found[0] if found else None

    def acquire(
        self, wait_s: float = 0.0, poll_s: float = 2.0, *, keep: Iterable[Lease] = ()
    ) -> Lease:
        """Take the lease, waiting up to ``wait_s`` for its holder; else LeaseHeldError.

        ``keep``: leases this job holds already, renewed while it waits (they would
        expire meanwhile, and another job could take them over and write).
        """
        keep = list(keep)
        deadline = time.monotonic() + wait_s
        renewed = time.monotonic()
        announced = False
        while True:
            holder = self.try_acquire()
            if holder is None:
                return self
            if time.monotonic() >= deadline:
                raise LeaseHeldError(self.name, holder.describe())
            if not announced:
                log.info("%s is being written by %s: waiting", self.name, holder.describe())
                announced = True
            if keep and time.monotonic() - renewed >= min(RENEW_EVERY_S, keep[0].ttl_s / 3):
                for lease in keep:
                    lease.renew()
                renewed = time.monotonic()
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def renew(self) -> None:
        """Extend the lease; LeaseLostError if another job took it over meanwhile."""
        if self.etag is None or not self._put(IfMatch=self.etag):
            self.lost = f"the lease of {self.name} was taken over by {self.current_holder()}"
            raise LeaseLostError(self.lost)

    def check(self) -> None:
        """Raise before a commit if the lease was lost (a renewal failed)."""
        if self.lost:
            raise LeaseLostError(self.lost)

    def release(self) -> None:
        """Give the lease back: an expired lease in its place, only if still this job's.

        S3 has no conditional DELETE, so release is a conditional PUT of a lease that
        has already expired; the next job takes it over at once.
        """
        if self.etag is None:
            return
        body = json.loads(self._body())
        body["expires_at"] = 0.0
        try:
            self._s3.put_object(
                Bucket=self.settings.bucket,
                Key=self.key,
                Body=json.dumps(body).encode(),
                IfMatch=self.etag,
            )
        except Exception as exc:
            if _error_code(exc) not in ("PreconditionFailed", "412"):
                raise
        self.etag = None
        self.acquired_at = None


@contextmanager
def hold(
    settings: Settings,
    tables: Iterable[str],
    *,
    job: str,
    wait_s: float = 0.0,
    ttl_s: float = TTL_S,
) -> Iterator[list[Lease]]:
    """Hold the leases of ``tables`` (taken in name order) while the block runs.

    A background thread renews them; a lease that could not be renewed makes
    :meth:`Lease.check` raise, so a job checks before it commits. The leases taken
    first are renewed while a later one is waited for, and once more when all are
    held: a job never starts on a lease another job took over meanwhile.
    """
    leases = [Lease(settings, t, job=job, ttl_s=ttl_s) for t in sorted(set(tables))]
    stop = threading.Event()
    with ExitStack() as stack:
        for i, lease in enumerate(leases):
            lease.acquire(wait_s, keep=leases[:i])
            stack.callback(lease.release)
        for lease in leases[:-1]:  # LeaseLostError if one was taken over while waiting
            lease.renew()

        def renew() -> None:
            while not stop.wait(min(RENEW_EVERY_S, ttl_s / 3)):
                for lease in leases:
                    try:
                        lease.renew()
                    except Exception as exc:  # noted; the job checks before committing
                        lease.lost = lease.lost or f"{lease.name}: {exc}"
                        log.error("lease renewal failed: %s", lease.lost)

        thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        thread.start()
        stack.callback(thread.join)
        stack.callback(stop.set)
        yield leases


def check_all(leases: Iterable[Lease]) -> None:
    for lease in leases:
        lease.check()
