"""One writer per table: a lease object in the lake, taken by conditional PUT.

Delta's S3 log store is safe only while a single driver writes a table, so every
job that writes a table holds its lease (``_leases/<table>.json`` in the bucket)
for as long as it runs. Taking it is ``PUT If-None-Match: *`` (only one creator
wins); renewing it and taking over an expired one are ``PUT If-Match: <etag>``
(only the holder, or one of several contenders, wins). A crashed holder stops
renewing, and its lease expires after ``ttl_s``.

Fencing: the holder keeps a deadline on its own monotonic clock (when its last
successful renewal was sent + ttl - :func:`commit_margin`) and :meth:`Lease.check`
fails once it passes, however a renewal is stuck; contenders judge expiry by the
store's clock (the object's ``Last-Modified`` against the response's ``Date``), so
no two hosts' clocks are ever compared.
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
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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
#: A holder stops committing this long before its lease could expire: the longest a
#: commit may take once checked (capped at a third of the ttl, see commit_margin).
COMMIT_MARGIN_S = 20.0
#: A failed renewal is tried again this soon (at most; a twelfth of the ttl if less).
RETRY_EVERY_S = 2.0
#: ``Date`` and ``Last-Modified`` are whole seconds: a lease's age read from them may
#: be up to this much short of the truth, so a contender waits it out too.
STORE_CLOCK_STEP_S = 1.0
#: How long leaving ``hold`` waits for a renewal under way (one that hangs is left).
JOIN_RENEWAL_S = 5.0


def commit_margin(ttl_s: float) -> float:
    """How long before the ttl a holder stops committing: COMMIT_MARGIN_S, at most a
    third of the ttl (renewals every third of it still leave room for retries)."""
    return min(COMMIT_MARGIN_S, ttl_s / 3)


def renew_every(ttl_s: float) -> float:
    return min(RENEW_EVERY_S, ttl_s / 3)


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
        # a hung request ends in seconds and is retried, well inside a lease's deadline
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3},
            connect_timeout=5,
            read_timeout=10,
        ),
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
    #: The holder's own clock's idea of the expiry: shown to people, never judged by
    #: (0: released, as older holders wrote it).
    expires_at: float
    ttl_s: float = TTL_S
    released: bool = False
    #: Seconds since the holder last wrote the lease, by the store's clock (None: this
    #: holder was not read from the store).
    age_s: float | None = None

    @classmethod
    def of(cls, body: dict[str, Any], age_s: float | None) -> Holder:
        known = {f.name for f in fields(cls)} - {"age_s"}
        return cls(**{k: v for k, v in body.items() if k in known}, age_s=age_s)

    @property
    def is_released(self) -> bool:
        return self.released or self.expires_at <= 0

    @property
    def expired(self) -> bool:
        """Released, or not renewed for its ttl by the store's clock (never this host's:
        a contender whose clock runs ahead must not take a live lease)."""
        if self.is_released:
            return True
        return self.age_s is not None and self.age_s > self.ttl_s + STORE_CLOCK_STEP_S

    @property
    def acquired_ts(self) -> float:
        """When the holder took the lease (epoch seconds; renewals keep it)."""
        return datetime.fromisoformat(self.acquired_at).timestamp()

    def describe(self) -> str:
        if self.is_released:
            left = -1.0
        elif self.age_s is not None:
            left = self.ttl_s - self.age_s
        else:
            left = self.expires_at - time.time()
        return (
            f"{self.job} (pid {self.pid} on {self.host}, since {self.acquired_at}, "
            f"lease {'expired' if left < 0 else f'expires in {left:.0f} s'})"
        )


def _store_age(obj: dict[str, Any]) -> float | None:
    """Seconds between the object's last write and the response, both by the store."""
    date = obj.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date or obj.get("LastModified") is None:
        return None  # no store clock to judge by: the lease counts as live
    return (parsedate_to_datetime(date) - obj["LastModified"]).total_seconds()


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
        self.margin_s = commit_margin(ttl_s)
        self.id = uuid.uuid4().hex
        self.etag: str | None = None
        #: Set when another job took the lease over: lost for good.
        self._taken: str | None = None
        #: time.monotonic() after which this job must not commit (None: not held yet)
        self._deadline: float | None = None
        self._renewed_at: float | None = None
        #: When this job took the lease: renewals keep it, so others see how long it ran
        self.acquired_at: str | None = None
        self._s3 = s3_client(settings)

    @property
    def lost(self) -> str | None:
        """Why this job must not commit under the lease any more; None while it may."""
        if self._taken:
            return self._taken
        if self._deadline is not None and time.monotonic() >= self._deadline:
            assert self._renewed_at is not None
            return (
                f"the lease of {self.name} was last renewed "
                f"{time.monotonic() - self._renewed_at:.1f} s ago (ttl {self.ttl_s:.0f} s, "
                f"{self.margin_s:.0f} s kept for a commit): another job may take it over"
            )
        return None

    def _body(self) -> bytes:
        return json.dumps(
            {
                "holder": self.id,
                "job": self.job,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": self.acquired_at or datetime.now(UTC).isoformat(timespec="seconds"),
                "expires_at": time.time() + self.ttl_s,
                "ttl_s": self.ttl_s,
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
        return Holder.of(json.loads(obj["Body"].read()), _store_age(obj)), obj["ETag"]

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

    def _written(self, sent: float) -> None:
        """A write of the lease sent at ``sent`` (monotonic) succeeded: the deadline
        moves to ``sent`` + ttl - margin, unless it passed meanwhile (lost for good)."""
        if self.lost:
            return
        self._renewed_at = sent
        self._deadline = sent + self.ttl_s - self.margin_s

    def _take(self, **condition: str) -> bool:
        sent = time.monotonic()  # before the request: the store's write is no earlier
        if not self._put(**condition):
            return False
        self._taken, self._deadline = None, None
        self._written(sent)
        return True

    def try_acquire(self) -> Holder | None:
        """Take the lease if free or expired; else return who holds it."""
        self.acquired_at = datetime.now(UTC).isoformat(timespec="seconds")
        if self._take(IfNoneMatch="*"):
            return None
        found = self.current()
        if found is None:  # released in between
            return None if self._take(IfNoneMatch="*") else self.current_holder()
        holder, etag = found
        if holder.expired:
            if not holder.is_released:  # left behind by a crash, or a stalled job
                log.warning("lease of %s held by %s: taking it over", self.name, holder.describe())
            if self._take(IfMatch=etag):
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
            if keep and time.monotonic() - renewed >= renew_every(keep[0].ttl_s):
                for lease in keep:
                    lease.renew_until_deadline()
                renewed = time.monotonic()
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def renew(self) -> None:
        """Extend the lease once; LeaseLostError if it is lost (another job took it
        over, or the deadline passed). Errors of the store propagate."""
        self.check()
        if self.etag is None:
            raise LeaseLostError(f"the lease of {self.name} is not held")
        sent = time.monotonic()
        if not self._put(IfMatch=self.etag):
            found = self.current()
            if found is None or found[0].holder != self.id or found[0].is_released:
                who = found[0].describe() if found else "nobody (the lease object is gone)"
                self._taken = f"the lease of {self.name} was taken over by {who}"
                raise LeaseLostError(self._taken)
            self.etag = found[1]  # this very write landed, and a retry of it met its ETag
        self._written(sent)

    def renew_until_deadline(self, stop: threading.Event | None = None) -> None:
        """Renew, trying again after an error of the store (MinIO restarting) until
        the deadline passes; then, or once another job took it, LeaseLostError."""
        retry_s = min(RETRY_EVERY_S, self.ttl_s / 12)
        while True:
            try:
                return self.renew()
            except LeaseLostError:
                raise
            except Exception as exc:
                log.warning("renewing the lease of %s failed, trying again: %s", self.name, exc)
            if stop is not None and stop.wait(retry_s):
                return
            if stop is None:
                time.sleep(retry_s)

    def check(self) -> None:
        """Raise LeaseLostError unless this job may still commit under the lease."""
        if why := self.lost:
            raise LeaseLostError(why)

    def release(self) -> None:
        """Give the lease back: an expired lease in its place, only if still this job's.

        S3 has no conditional DELETE, so release is a conditional PUT of a lease that
        has already expired; the next job takes it over at once.
        """
        if self.etag is None:
            return
        body = json.loads(self._body())
        body["expires_at"] = 0.0
        body["released"] = True
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


def _keep_renewed(leases: list[Lease], stop: threading.Event) -> None:
    """The renewal thread: every lease renewed in turn until ``stop``; a lost one is
    left (the job's next check fails)."""
    while not stop.wait(renew_every(leases[0].ttl_s)):
        for lease in leases:
            if lease.lost:
                continue
            try:
                lease.renew_until_deadline(stop)
            except LeaseLostError as exc:
                log.error("lease lost, the job must not commit: %s", exc)


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

    A background thread renews them; :meth:`Lease.check` raises once a lease could
    have been lost, so a job checks before it commits. The leases taken first are
    renewed while a later one is waited for, and once more when all are held: a
    job never starts on a lease another job took over meanwhile.
    """
    leases = [Lease(settings, t, job=job, ttl_s=ttl_s) for t in sorted(set(tables))]
    stop = threading.Event()
    with ExitStack() as stack:
        for i, lease in enumerate(leases):
            lease.acquire(wait_s, keep=leases[:i])
            stack.callback(lease.release)
        for lease in leases[:-1]:  # LeaseLostError if one was taken over while waiting
            lease.renew_until_deadline()

        thread = threading.Thread(
            target=_keep_renewed, args=(leases, stop), name="lease-renewal", daemon=True
        )
        thread.start()
        stack.callback(thread.join, JOIN_RENEWAL_S)  # a hung renewal is not waited for
        stack.callback(stop.set)
        yield leases


def check_all(leases: Iterable[Lease]) -> None:
    for lease in leases:
        lease.check()
