"""Synthetic ticks: a seeded generator and a rate-controlled Kafka producer.

The generator is pure (no I/O, no wall clock unless given one): each symbol's
price follows a geometric Brownian motion, rounded to the exchange's tick size
(SEC Rule 612: $0.01 at or above $1, $0.0001 below), with odd-lot and round-lot
trade sizes. Random draws are made in fixed blocks, so a seed gives the same
ticks however the producer slices them.

Event time (``ts``, epoch ms UTC) is either the wall clock at sending time (live)
or a virtual clock that starts at ``start_ms`` and advances ``step_ms`` per tick
(tests and backfills: results do not depend on how fast the machine is). A share
of ticks can be sent *out of order* (``ts`` moved back by at most
``out_of_order_max_ms``, which should stay within the streaming watermark so they
still count) or *late* (``ts`` at least ``late_by_ms`` behind the newest event
time, meant to be beyond the watermark and dropped).

:func:`run_producer` sends ticks to ``stock.ticks`` (key = symbol) through the
idempotent :class:`~stockpipe.kafka.ConfirmedProducer`, holds a target rate and
stops on a duration, a tick count, a stop event or Ctrl-C, flushing what it has.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stockpipe.config import Settings
from stockpipe.errors import ParameterError
from stockpipe.kafka import ConfirmedProducer, Delivered, DeliveryReport
from stockpipe.schemas import SCHEMA_VERSION

#: Trading seconds in a year (252 sessions of 6.5 h): the GBM's time unit.
TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600

#: Rough price levels for familiar symbols; others get a seeded level.
START_PRICES: dict[str, float] = {
    "AAPL": 190.0,
    "MSFT": 410.0,
    "GOOGL": 140.0,
    "AMZN": 175.0,
    "NVDA": 120.0,
    "TSLA": 180.0,
    "META": 480.0,
    "SPY": 520.0,
}

#: Kinds of tick, as in :attr:`TickBatch.kind`.
IN_ORDER, OUT_OF_ORDER, LATE = 0, 1, 2

_BLOCK = 4096


def tick_size(price: np.ndarray | float) -> np.ndarray:
    """Minimum price increment: one cent from $1 up, 1/100 cent below."""
    return np.where(np.asarray(price) >= 1.0, 0.01, 0.0001)


def round_to_tick(price: np.ndarray) -> np.ndarray:
    """Prices on the tick grid, never below one tick."""
    step = tick_size(price)
    return np.round(np.maximum(np.round(price / step), 1.0) * step, 4)


def _symbol_seed(seed: int, symbol: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class TickSpec:
    """What to generate: symbols, seed, event-time clock and disorder."""

    symbols: tuple[str, ...] = ("AAPL", "MSFT", "GOOGL", "AMZN")
    seed: int = 0
    #: Nominal ticks per second over all symbols; sets the GBM step and the virtual clock.
    rate: float = 1000.0
    #: Virtual clock start (epoch ms); None: event time is the wall clock when sent.
    start_ms: int | None = None
    #: Event-time ms per tick on the virtual clock (default 1000 / rate).
    step_ms: float | None = None
    out_of_order_fraction: float = 0.0
    out_of_order_max_ms: int = 10_000
    late_fraction: float = 0.0
    late_by_ms: int = 120_000
    #: Annualised volatility; None: a seeded value per symbol between 15 % and 60 %.
    volatility: float | None = None
    producer_id: str = ""

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ParameterError("symbols", self.symbols, "one symbol or more")
        object.__setattr__(self, "symbols", tuple(s.upper() for s in self.symbols))
        if self.rate <= 0:
            raise ParameterError("rate", self.rate, "positive")
        for name in ("out_of_order_fraction", "late_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParameterError(name, getattr(self, name), "within [0, 1]")
        if self.out_of_order_fraction + self.late_fraction > 1.0:
            raise ParameterError(
                "late_fraction",
                self.late_fraction,
                f"at most 1 - out_of_order_fraction ({self.out_of_order_fraction})",
            )
        if self.out_of_order_max_ms < 1:
            raise ParameterError("out_of_order_max_ms", self.out_of_order_max_ms, "1 or more")
        if self.late_by_ms < 0:
            raise ParameterError("late_by_ms", self.late_by_ms, "0 or more")
        if not self.producer_id:
            object.__setattr__(self, "producer_id", f"ticks-{uuid.uuid4().hex[:12]}")


@dataclass
class TickBatch:
    """A slice of ticks as columns (numpy arrays), in sending order."""

    symbol: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    size: np.ndarray
    seq: np.ndarray
    kind: np.ndarray
    producer_id: str

    def __len__(self) -> int:
        return len(self.seq)

    def to_frame(self) -> pd.DataFrame:
        """The ticks as the contract's columns plus ``kind``."""
        return pd.DataFrame(
            {
                "symbol": self.symbol.astype(object),
                "ts": self.ts,
                "price": self.price,
                "size": self.size,
                "seq": self.seq,
                "producer_id": self.producer_id,
                "kind": self.kind,
            }
        )

    def messages(self) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` Kafka payloads: key = symbol, value = the tick's JSON."""
        pid = self.producer_id
        out = []
        for sym, ts, price, size, seq in zip(
            self.symbol.tolist(),
            self.ts.tolist(),
            self.price.tolist(),
            self.size.tolist(),
            self.seq.tolist(),
            strict=True,
        ):
            value = (
                f'{{"schema_version":{SCHEMA_VERSION},"symbol":"{sym}","ts":{ts},'
                f'"price":{price!r},"size":{size},"seq":{seq},"producer_id":"{pid}"}}'
            )
            out.append((sym.encode(), value.encode()))
        return out


class TickGenerator:
    """Seeded ticks for a :class:`TickSpec`, served in slices of any length."""

    def __init__(self, spec: TickSpec) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(spec.seed)
        n = len(spec.symbols)
        sym_rngs = [np.random.default_rng(_symbol_seed(spec.seed, s)) for s in spec.symbols]
        start = [
            START_PRICES.get(s, float(r.uniform(20, 500)))
            for s, r in zip(spec.symbols, sym_rngs, strict=True)
        ]
        self._log_price = np.log(np.array(start))
        vols = [spec.volatility or float(r.uniform(0.15, 0.6)) for r in sym_rngs]
        self.volatility = dict(zip(spec.symbols, vols, strict=True))
        self._vol = np.array(vols)
        # Each symbol trades about rate / n times a second.
        self._dt = n / spec.rate / TRADING_SECONDS_PER_YEAR
        self._step_ms = spec.step_ms if spec.step_ms is not None else 1000.0 / spec.rate
        self._buf: dict[str, np.ndarray] | None = None
        self._pos = 0
        self.seq = 0  # next sequence number
        self.max_ts: int | None = None  # newest in-order event time so far

    def _block(self) -> dict[str, np.ndarray]:
        rng, spec = self._rng, self.spec
        b = _BLOCK
        sym = rng.integers(0, len(spec.symbols), size=b)
        z = rng.standard_normal(b)
        u_size = rng.random(b)
        odd = rng.integers(1, 100, size=b)
        lots = 100 * rng.geometric(0.45, size=b)
        u_kind = rng.random(b)
        ooo = rng.integers(1, spec.out_of_order_max_ms + 1, size=b)
        late_jitter = rng.integers(0, 1000, size=b)
        # GBM per symbol, in sending order.
        sigma = self._vol[sym]
        inc = -0.5 * sigma**2 * self._dt + sigma * np.sqrt(self._dt) * z
        logp = np.empty(b)
        for i in range(len(spec.symbols)):
            mask = sym == i
            if mask.any():
                path = self._log_price[i] + np.cumsum(inc[mask])
                logp[mask] = path
                self._log_price[i] = path[-1]
        kind = np.full(b, IN_ORDER, dtype=np.int8)
        kind[u_kind < spec.out_of_order_fraction] = OUT_OF_ORDER
        late = (u_kind >= spec.out_of_order_fraction) & (
            u_kind < spec.out_of_order_fraction + spec.late_fraction
        )
        kind[late] = LATE
        size = np.where(u_size < 0.55, odd, lots).astype(np.int64)
        return {
            "sym": sym,
            "price": round_to_tick(np.exp(logp)),
            "size": size,
            "kind": kind,
            "ooo": ooo.astype(np.int64),
            "late": late_jitter.astype(np.int64),
        }

    def _draw(self, n: int) -> dict[str, np.ndarray]:
        parts: list[dict[str, np.ndarray]] = []
        while n > 0:
            if self._buf is None or self._pos >= _BLOCK:
                self._buf, self._pos = self._block(), 0
            k = min(n, _BLOCK - self._pos)
            parts.append({key: v[self._pos : self._pos + k] for key, v in self._buf.items()})
            self._pos += k
            n -= k
        if not parts:
            return {
                k: np.empty(0, dtype=np.int64)
                for k in ("sym", "price", "size", "kind", "ooo", "late")
            }
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def take(self, n: int, now_ms: int | None = None) -> TickBatch:
        """The next ``n`` ticks; ``now_ms`` is the live event time (virtual clock if None)."""
        spec = self.spec
        d = self._draw(n)
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        if now_ms is None:
            if spec.start_ms is None:
                raise ParameterError(
                    "now_ms", now_ms, "optional for live ticks", use="now_ms, or a spec's start_ms"
                )
            nominal = spec.start_ms + np.floor(seq * self._step_ms).astype(np.int64)
        else:
            nominal = np.full(n, int(now_ms), dtype=np.int64)
        newest = np.maximum.accumulate(nominal) if n else nominal
        if self.max_ts is not None and n:
            newest = np.maximum(newest, self.max_ts)
        ts = nominal.copy()
        ooo = d["kind"] == OUT_OF_ORDER
        ts[ooo] = nominal[ooo] - d["ooo"][ooo]
        late = d["kind"] == LATE
        ts[late] = newest[late] - spec.late_by_ms - d["late"][late]
        if n:
            self.max_ts = int(newest[-1])
        return TickBatch(
            symbol=np.asarray(spec.symbols, dtype=object)[d["sym"]],
            ts=ts,
            price=d["price"],
            size=d["size"],
            seq=seq,
            kind=d["kind"],
            producer_id=spec.producer_id,
        )


@dataclass
class TickRunReport(Delivered):
    """What one producer run sent (as Kafka confirmed it) and how fast."""

    producer_id: str
    topic: str
    target_rate: float | None
    delivery: DeliveryReport
    generated: int = 0
    kinds: Counter = field(default_factory=Counter)
    first_seq: int | None = None
    last_seq: int | None = None
    min_ts: int | None = None
    max_ts: int | None = None
    send_seconds: float = 0.0
    stopped_by: str = ""

    @property
    def rate(self) -> float:
        """Ticks handed to Kafka per second while sending."""
        return self.generated / self.send_seconds if self.send_seconds else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "producer_id": self.producer_id,
            "topic": self.topic,
            "target_rate": self.target_rate,
            "rate": round(self.rate, 1),
            "generated": self.generated,
            "sent": self.sent,
            "failed": self.failed,
            "out_of_order": self.kinds.get(OUT_OF_ORDER, 0),
            "late": self.kinds.get(LATE, 0),
            "seq": (self.first_seq, self.last_seq),
            "event_time": (
                None if self.min_ts is None else pd.Timestamp(self.min_ts, unit="ms", tz="UTC"),
                None if self.max_ts is None else pd.Timestamp(self.max_ts, unit="ms", tz="UTC"),
            ),
            "seconds": round(self.send_seconds, 2),
            "stopped_by": self.stopped_by,
            "per_symbol": dict(sorted(self.delivery.per_key.items())),
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"{s['sent']} ticks confirmed ({s['failed']} failed) to {s['topic']} in "
            f"{s['seconds']} s: {s['rate']} ticks/s (target {s['target_rate'] or 'max'}); "
            f"{s['out_of_order']} out of order, {s['late']} late; stopped by {s['stopped_by']}"
        )


def require_an_end(
    duration_s: float | None, max_ticks: int | None, stop: threading.Event | None
) -> None:
    """A producer run must end: by a duration, a count or a stop event."""
    if duration_s is None and max_ticks is None and stop is None:
        raise ParameterError(
            "duration_s", None, "optional without max_ticks or stop (the run would never end)"
        )


def run_producer(
    settings: Settings,
    spec: TickSpec,
    *,
    rate: float | None = None,
    duration_s: float | None = None,
    max_ticks: int | None = None,
    topic: str | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[TickRunReport], None] | None = None,
    progress_every_s: float = 5.0,
    keep: list[pd.DataFrame] | None = None,
) -> TickRunReport:
    """Send ticks at ``rate`` per second (None: as fast as possible) until told to stop.

    Stops on ``duration_s``, ``max_ticks``, ``stop`` being set, or Ctrl-C; in every
    case what was handed to the producer is flushed and counted. ``keep``, if
    given, receives every slice sent as a frame (tests, reference results).
    """
    require_an_end(duration_s, max_ticks, stop)
    topic = topic or settings.topic_ticks
    gen = TickGenerator(spec)
    producer = ConfirmedProducer(settings, topic, client_id=spec.producer_id)
    report = TickRunReport(spec.producer_id, topic, rate, producer.report)
    chunk = max(1, int(rate / 100)) if rate else 2000  # ~10 ms of ticks per send
    t0 = time.perf_counter()
    next_progress = t0 + progress_every_s
    try:
        while True:
            now = time.perf_counter()
            elapsed = now - t0
            if duration_s is not None and elapsed >= duration_s:
                report.stopped_by = "duration"
                break
            if max_ticks is not None and report.generated >= max_ticks:
                report.stopped_by = "count"
                break
            if stop is not None and stop.is_set():
                report.stopped_by = "stop"
                break
            if rate:
                due = int(rate * elapsed) - report.generated
                if due < chunk:  # send whole chunks: per-send overhead dwarfs a tick's
                    time.sleep(max(0.0005, (report.generated + chunk) / rate - elapsed))
                    continue
                n = min(due, 4 * chunk)
            else:
                n = chunk
            if max_ticks is not None:
                n = min(n, max_ticks - report.generated)
            batch = gen.take(n, None if spec.start_ms is not None else int(time.time() * 1000))
            producer.send_many(batch.messages())
            _account(report, batch)
            if keep is not None:
                keep.append(batch.to_frame())
            if on_progress is not None and now >= next_progress:
                report.send_seconds = now - t0
                on_progress(report)
                next_progress = now + progress_every_s
    except KeyboardInterrupt:
        report.stopped_by = "interrupt"
    finally:
        report.send_seconds = time.perf_counter() - t0
        producer.close(raise_on_failure=False)
    return report


def _account(report: TickRunReport, batch: TickBatch) -> None:
    n = len(batch)
    if not n:
        return
    report.generated += n
    kinds = np.bincount(batch.kind, minlength=3)
    for k in (IN_ORDER, OUT_OF_ORDER, LATE):
        report.kinds[k] += int(kinds[k])
    if report.first_seq is None:
        report.first_seq = int(batch.seq[0])
    report.last_seq = int(batch.seq[-1])
    lo, hi = int(batch.ts.min()), int(batch.ts.max())
    report.min_ts = lo if report.min_ts is None else min(report.min_ts, lo)
    report.max_ts = hi if report.max_ts is None else max(report.max_ts, hi)
