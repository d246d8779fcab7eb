"""Generated bad input through Kafka, the batch job and the streaming job, for real.

Hypothesis makes each batch: valid bars or ticks, near-valid ones with one field
perturbed (each perturbation names the reason code it must give), arbitrary
bytes and arbitrary JSON values, deeply nested and oversized values. After one
job run: every record is in raw with its exact bytes; every valid one is in
processed (or its windows), equal to an independent pandas computation; every
other one is in quarantine with its reason; pandas, polars and the report read
every zone.

The seed is printed (and can be set with STOCKPIPE_PROPERTY_SEED) so a failing
run can be replayed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import uuid
from dataclasses import dataclass

import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from oracles.bars import assert_same_bars, expected_processed
from oracles.tick_windows import compare_windows, parse_tick_values, reference_windows

from stockpipe.kafka import ConfirmedProducer, ensure_topics
from stockpipe.lake import storage_options, table_uri
from stockpipe.reader import (
    read_bars,
    read_quarantine,
    read_quarantined_ticks,
    read_raw_bars,
    read_raw_ticks,
    read_tick_windows,
)
from stockpipe.reporting import market_report
from stockpipe.schemas import (
    BAR_REASONS,
    MAX_PRICE,
    MAX_RECORD_BYTES,
    MAX_TICK_SIZE,
    MAX_VOLUME,
    TICK_REASONS,
    bar_messages,
    conform_bars,
)
from stockpipe.spark.batch import run_batch_job
from stockpipe.spark.streaming import StreamOptions, run_stream
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.ticks import TickGenerator, TickSpec

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("STOCKPIPE_PROPERTY_SEED") or random.SystemRandom().randrange(2**32))
print(f"bad-input property tests: seed {SEED} (replay with STOCKPIPE_PROPERTY_SEED={SEED})")

#: Jobs are slow: a few large generated batches rather than many small ones, and no
#: shrinking (each step would be a job run); the printed seed replays a failure.
EXAMPLES = settings(
    max_examples=2,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Case:
    """One generated record, and what the job must make of it."""

    key: bytes
    value: bytes | None
    #: None: valid. "": invalid, any reasons. Else a code the record's reasons hold.
    expect: str | None


def _key(i: int, hostile: bool) -> bytes:
    """Case i's key: its index first (read back from raw), bytes not UTF-8 after it."""
    return f"case-{i:05d}-".encode() + (b"\xff\xfe" if hostile else b"")


def _index(key: str) -> int:
    return int(key.split("-")[1])


def _as_sent(rows: pd.DataFrame, column: str = "value") -> list[bytes | None]:
    """The column's bytes as sent: from its base64 copy where they were not UTF-8."""
    out: list[bytes | None] = []
    for v, b64 in zip(rows[column], rows[f"{column}_b64"], strict=True):
        if isinstance(b64, str):
            out.append(base64.b64decode(b64))
        else:
            out.append(None if v is None else v.encode())
    return out


# Values any producer could send -----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
hostile_values = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1_000, 20_000).map(
        lambda n: b"[" * n + b"]" * n
    ),  # nesting past the parser's limit
    st.integers(1_000, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.just(b""),
    st.none(),  # a tombstone
)
#: Text Spark's JSON reader takes for a number (NaN, infinities): not a wrong type.
NUMBER_WORDS = {"NaN", "+NaN", "-NaN", "INF", "+INF", "-INF", "Infinity", "+Infinity", "-Infinity"}
wrong_type_values = st.one_of(
    st.text(min_size=1, max_size=5).filter(lambda t: t not in NUMBER_WORDS),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
#: Characters no symbol may hold, and strings of them.
BAD_SYMBOL_CHARS = st.sampled_from(list(";!@#$% ,\"'\\\u0000\u00e9\u65e5\t|*?<>"))
bad_symbols = st.one_of(
    st.tuples(
        st.text("ABCXYZ019", min_size=1, max_size=5),
        BAD_SYMBOL_CHARS,
        st.text("AB.", min_size=1, max_size=3),
    ).map("".join),
    st.integers(33, 80).map(lambda n: "A" * n),
)


# Bars ---------------------------------------------------------------------------------


def _valid_bars(rng: random.Random, n: int, now: pd.Timestamp) -> pd.DataFrame:
    """``n`` daily bars of three symbols, consistent OHLC, unique keys."""
    rows = []
    for i in range(n):
        symbol = ("PRA", "PRB", "PRC")[i % 3]
        close = rng.uniform(5, 500)
        open_ = close * rng.uniform(0.95, 1.05)
        rows.append(
            {
                "symbol": symbol,
                "interval": "1d",
                "ts": pd.Timestamp("2021-01-01", tz="UTC") + pd.Timedelta(days=i // 3),
                "open": open_,
                "high": max(open_, close) * rng.uniform(1, 1.03),
                "low": min(open_, close) * rng.uniform(0.97, 1),
                "close": close,
                "adj_close": close * 0.99,
                "volume": rng.randrange(0, 10**9),
                "source": "synthetic",
                "ingested_at": now,
                "batch_id": "property",
            }
        )
    return conform_bars(pd.DataFrame(rows))


BAR_TEMPLATE = {
    "schema_version": 1,
    "symbol": "PRX",
    "interval": "1d",
    "ts": "2021-06-01T00:00:00.000Z",
    "open": 10.0,
    "high": 11.0,
    "low": 9.0,
    "close": 10.5,
    "adj_close": 10.4,
    "volume": 100,
    "source": "csv",
    "ingested_at": "2021-06-02T00:00:00.000Z",
    "batch_id": "b1",
}
DROP = object()


def _message(template: dict, **changes) -> bytes:
    """``template`` with some fields changed (DROP removes one), as JSON."""
    msg = {**template, **changes}
    return json.dumps({k: v for k, v in msg.items() if v is not DROP}).encode()


def _bar(**changes) -> bytes:
    return _message(BAR_TEMPLATE, **changes)


def _years_ago(years: int) -> str:
    return f"{years:04d}-06-01T00:00:00Z"


bar_perturbations = st.one_of(
    st.sampled_from(
        ["schema_version", "symbol", "interval", "ts", "open", "high", "low", "close", "volume"]
    ).map(lambda f: (_bar(**{f: DROP}), f"missing_{f}")),
    st.sampled_from(["open", "high", "low", "close", "adj_close"]).flatmap(
        lambda f: wrong_type_values.map(lambda v: (_bar(**{f: v}), f"wrong_type_{f}"))
    ),
    wrong_type_values.map(lambda v: (_bar(volume=v), "wrong_type_volume")),
    st.integers(-(2**31), 2**31 - 1)
    .filter(lambda v: v != 1)
    .map(lambda v: (_bar(schema_version=v), "unknown_schema_version")),
    bad_symbols.map(lambda s: (_bar(symbol=s), "bad_symbol")),
    st.text(min_size=1, max_size=10)
    .filter(lambda s: s.strip(" ") and s not in ("1d", "1h", "5m", "1m"))
    .map(lambda s: (_bar(interval=s), "unknown_interval")),
    st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(
        lambda p: (_bar(adj_close=p), "non_positive_price")
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda t: (
            _bar().replace(b'"adj_close": 10.4', f'"adj_close": {t}'.encode()),
            "non_finite_price",
        )
    ),
    st.floats(min_value=MAX_PRICE * 1.001, max_value=1e300).map(
        lambda p: (_bar(adj_close=p), "price_too_large")
    ),
    st.floats(min_value=0.01, max_value=8.99).map(lambda h: (_bar(high=h), "high_below_range")),
    st.integers(min_value=-(2**63), max_value=-1).map(
        lambda v: (_bar(volume=v), "negative_volume")
    ),
    st.integers(min_value=MAX_VOLUME + 1, max_value=2**63 - 1).map(
        lambda v: (_bar(volume=v), "volume_too_large")
    ),
    st.integers(1, 1899).map(lambda y: (_bar(ts=_years_ago(y)), "early_ts")),
    st.integers(2100, 9999).map(lambda y: (_bar(ts=_years_ago(y)), "future_ts")),
    st.integers(2100, 9999).map(lambda y: (_bar(ingested_at=_years_ago(y)), "future_ingested_at")),
    st.sampled_from(["2021-06-01 00:00:00", "yesterday", "2021-13-01T00:00:00Z", "1622505600"]).map(
        lambda t: (_bar(ts=t), "bad_timestamp_ts")
    ),
    st.just((_bar(batch_id="x" * MAX_RECORD_BYTES), "record_too_large")),
    st.just((_bar().replace(b'"b1"', b'"b\xff1"'), "invalid_utf8")),
)


@st.composite
def bar_batches(draw) -> tuple[list[Case], pd.DataFrame]:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    valid = _valid_bars(rng, draw(st.integers(30, 120)), pd.Timestamp.now(tz="UTC").floor("s"))
    bad = [
        Case(b"", v, code)
        for v, code in draw(st.lists(bar_perturbations, min_size=20, max_size=60))
    ]
    hostile = [Case(b"", v, "") for v in draw(st.lists(hostile_values, min_size=10, max_size=30))]
    good = [Case(b"", v, None) for _, v in bar_messages(valid)]
    cases = draw(st.permutations(good + bad + hostile))
    keyed = [Case(_key(i, draw(st.booleans())), c.value, c.expect) for i, c in enumerate(cases)]
    return keyed, valid


def _own(settings, name: str):
    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "bucket": f"prop-{name}-{run}",
            "topic_bars": f"prop.bars.{run}",
            "topic_ticks": f"prop.ticks.{run}",
        }
    )
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars], partitions=3)
    # one partition keeps the good ticks in the order the reference reads them
    ensure_topics(s, [s.topic_ticks], partitions=1)
    return s


def _send(s, topic: str, cases: list[Case]) -> None:
    with ConfirmedProducer(s, topic) as producer:
        producer.send_many((c.key, c.value) for c in cases)


def _check_raw(raw: pd.DataFrame, cases: list[Case]) -> None:
    assert len(raw) == len(cases), "every record once in raw"
    got = dict(
        zip(
            (_index(k) for k in raw["key"]),
            zip(_as_sent(raw, "key"), _as_sent(raw), strict=True),
            strict=True,
        )
    )
    assert got == {i: (c.key, c.value) for i, c in enumerate(cases)}, "the bytes as sent"


def _check_quarantine(quarantined: pd.DataFrame, cases: list[Case], codes: dict[str, str]) -> None:
    bad = {i: c for i, c in enumerate(cases) if c.expect is not None}
    by_case = {_index(k): r for k, r in zip(quarantined["key"], quarantined["reason"], strict=True)}
    assert sorted(by_case) == sorted(bad), "exactly the invalid records are quarantined"
    sent = dict(zip((_index(k) for k in quarantined["key"]), _as_sent(quarantined), strict=True))
    for i, case in bad.items():
        reasons = by_case[i].split("; ")
        assert reasons and set(reasons) <= set(codes), (i, reasons)
        if case.expect:
            assert case.expect in reasons, (i, case.value[:200] if case.value else None, reasons)
        assert sent[i] == case.value, i  # the record as received, bytes and all


def _polars_reads(s, tables: list[str]) -> None:
    for name in tables:
        frame = pl.read_delta(table_uri(s, name), storage_options=storage_options(s))
        assert frame.height >= 0 and frame.width > 0


@seed(SEED)
@EXAMPLES
@given(batch=bar_batches())
def test_generated_bars_land_in_exactly_one_zone_with_their_reasons(settings, spark, batch):
    cases, valid = batch
    s = _own(settings, "bars")
    _send(s, s.topic_bars, cases)
    report = run_batch_job(s, spark=spark)
    n_bad = sum(c.expect is not None for c in cases)
    assert report.records_read == len(cases)
    assert report.quarantined_rows == n_bad

    _check_raw(read_raw_bars(s), cases)
    _check_quarantine(read_quarantine(s), cases, BAR_REASONS)
    assert_same_bars(read_bars(s, None), expected_processed(valid))
    _polars_reads(s, ["raw_bars", "quarantine_bars", "processed_bars"])
    assert "Data quality" in market_report(s).html


# Ticks --------------------------------------------------------------------------------

BASE_MS = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)
TICK_TEMPLATE = {
    "schema_version": 1,
    "symbol": "PRX",
    "ts": BASE_MS + 1_000,
    "price": 10.5,
    "size": 100,
    "seq": 0,
    "producer_id": "bad",
}


def _tick(**changes) -> bytes:
    return _message(TICK_TEMPLATE, **changes)


tick_perturbations = st.one_of(
    st.sampled_from(["schema_version", "symbol", "ts", "price", "size", "seq", "producer_id"]).map(
        lambda f: (_tick(**{f: DROP}), f"missing_{f}")
    ),
    st.sampled_from(["ts", "price", "size", "seq", "schema_version"]).flatmap(
        lambda f: wrong_type_values.map(lambda v: (_tick(**{f: v}), f"wrong_type_{f}"))
    ),
    st.integers(-(2**31), 2**31 - 1)
    .filter(lambda v: v != 1)
    .map(lambda v: (_tick(schema_version=v), "unknown_schema_version")),
    bad_symbols.map(lambda s: (_tick(symbol=s), "bad_symbol")),
    st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(
        lambda p: (_tick(price=p), "non_positive_price")
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda t: (_tick().replace(b'"price": 10.5', f'"price": {t}'.encode()), "non_finite_price")
    ),
    st.floats(min_value=MAX_PRICE * 1.001, max_value=1e300).map(
        lambda p: (_tick(price=p), "price_too_large")
    ),
    st.integers(min_value=-(2**63), max_value=0).map(
        lambda v: (_tick(size=v), "non_positive_size")
    ),
    st.integers(min_value=MAX_TICK_SIZE + 1, max_value=2**63 - 1).map(
        lambda v: (_tick(size=v), "size_too_large")
    ),
    st.integers(min_value=-(2**62), max_value=0).map(lambda v: (_tick(ts=v), "early_ts")),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=2**40))
    .filter(lambda v: abs(v) < 2**63)
    .map(lambda v: (_tick(seq=v), "seq_out_of_range")),
    # ahead of Kafka's receipt (now) by more than the watermark delay
    st.integers(min_value=10**13, max_value=2**62).map(lambda v: (_tick(ts=v), "future_ts")),
    st.just((_tick(producer_id="x" * MAX_RECORD_BYTES), "record_too_large")),
    st.just((_tick().replace(b'"PRX"', b'"P\xffX"'), "invalid_utf8")),
)

WINDOW, SLIDE, WATERMARK = "10 seconds", "5 seconds", "5 seconds"


@st.composite
def tick_batches(draw) -> tuple[list[Case], list[bytes]]:
    spec = TickSpec(
        symbols=("PRA", "PRB"),
        seed=draw(st.integers(0, 2**31 - 1)),
        rate=100,
        start_ms=BASE_MS,
        step_ms=draw(st.sampled_from([50, 80, 100])),  # 25 s of event time at least
        producer_id="property",
    )
    good_values = [v for _, v in TickGenerator(spec).take(draw(st.integers(500, 1200))).messages()]
    bad = [
        Case(b"", v, code)
        for v, code in draw(st.lists(tick_perturbations, min_size=20, max_size=60))
    ]
    hostile = [Case(b"", v, "") for v in draw(st.lists(hostile_values, min_size=10, max_size=30))]
    # the good ticks in their order (windows depend on it), the bad ones among them
    cases = [Case(b"", v, None) for v in good_values]
    for c in bad + hostile:
        cases.insert(draw(st.integers(0, len(cases))), c)
    keyed = [Case(_key(i, draw(st.booleans())), c.value, c.expect) for i, c in enumerate(cases)]
    return keyed, good_values


@seed(SEED)
@EXAMPLES
@given(batch=tick_batches())
def test_generated_ticks_land_in_raw_and_windows_or_quarantine(
    settings, spark, stream_spark, batch
):
    cases, good_values = batch
    s = _own(settings, "ticks")
    _send(s, s.topic_ticks, cases)
    opts = StreamOptions(
        window=WINDOW,
        slide=SLIDE,
        watermark=WATERMARK,
        mode="available-now",
        name=f"prop_{uuid.uuid4().hex[:6]}",
        duration_s=600,
        state_partitions=2,
    )
    run = run_stream(s, opts, spark=stream_spark)
    assert run.stopped_by == "backlog done"

    _check_raw(read_raw_ticks(s), cases)
    _check_quarantine(read_quarantined_ticks(s), cases, TICK_REASONS)
    expected = reference_windows(
        parse_tick_values(good_values), window=WINDOW, slide=SLIDE, watermark=WATERMARK
    )
    assert len(expected) > 0
    assert compare_windows(read_tick_windows(s), expected) == []
    _polars_reads(s, ["raw_ticks", "quarantine_ticks", "tick_windows"])
    assert "Data quality" in market_report(s).html
