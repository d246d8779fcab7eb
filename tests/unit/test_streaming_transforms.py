"""The streaming job's pure transforms, on small batch frames, against pandas."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from oracles.tick_windows import compare_windows, late_pairs, parse_tick_values, reference_windows

from stockpipe.live import Rejected, rejected_value
from stockpipe.schemas import (
    MAX_PRICE,
    MAX_RECORD_BYTES,
    TICK_REASONS,
    TICK_REQUIRED_FIELDS,
)
from stockpipe.spark import streaming, tick_transforms
from stockpipe.spark.records import raw_from_kafka
from stockpipe.spark.streaming import (
    ProgressRecorder,
    StreamOptions,
    progress_row,
    trigger_of,
)
from stockpipe.spark.tick_transforms import (
    FUTURE_TOLERANCE_MS,
    needs_checking,
    parse_ticks,
    quarantined_ticks,
    valid_ticks,
    validate_ticks,
    window_aggregates,
)
from stockpipe.ticks import TickGenerator, TickSpec
from stockpipe.times import to_ms

BASE = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)
KAFKA_TS = dt.datetime(2024, 1, 2, 15, 0, tzinfo=dt.UTC)
GOOD = {
    "schema_version": 1,
    "symbol": "AAPL",
    "ts": BASE,
    "price": 190.01,
    "size": 100,
    "seq": 1,
    "producer_id": "p",
}


def _records(spark, values: list[str | None], keys: list[str] | None = None):
    rows = [
        (
            (keys[i] if keys else "K").encode(),
            None if v is None else v.encode(),
            "stock.ticks",
            0,
            i,
            KAFKA_TS,
        )
        for i, v in enumerate(values)
    ]
    schema = (
        "key BINARY, value BINARY, topic STRING, partition INT, offset LONG, timestamp TIMESTAMP"
    )
    return spark.createDataFrame(rows, schema)


def _with(**changes) -> str:
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not _DROP})


_DROP = object()


_ALL_MISSING = "; ".join(f"missing_{f}" for f in TICK_REQUIRED_FIELDS)
_KAFKA_MS = int(KAFKA_TS.timestamp() * 1000)

#: (value, its reason codes); every code of TICK_REASONS has a case.
CASES = [
    (_with(), None),
    (None, "unparsable_json"),
    ("   ", "unparsable_json"),
    ("not json at all", "unparsable_json"),
    ("[1, 2, 3]", "unparsable_json"),
    (_with(producer_id="x" * MAX_RECORD_BYTES), "record_too_large"),
    (_with(ts="yesterday"), "wrong_type_ts"),
    (_with(size=1.5), "wrong_type_size"),
    (_with(price="190"), "wrong_type_price"),
    (_with(seq=[1]), "wrong_type_seq"),
    (_with(schema_version="1"), "wrong_type_schema_version"),
    (_with(symbol=_DROP), "missing_symbol"),
    (_with(symbol=" "), "missing_symbol"),
    (_with(price=_DROP), "missing_price"),
    (_with(size=None), "missing_size"),
    (_with(ts=_DROP), "missing_ts"),
    (_with(seq=_DROP), "missing_seq"),
    (_with(producer_id=""), "missing_producer_id"),
    ("{}", _ALL_MISSING),
    (_with(schema_version=_DROP), "missing_schema_version"),
    (_with(schema_version=2), "unknown_schema_version"),
    (_with(symbol="AAPL\u0000"), "bad_symbol"),
    (_with(symbol="A" * 33), "bad_symbol"),
    (_with(symbol="^GSPC"), None),
    (_with(symbol="M&M.NS"), None),
    (_with(price=0), "non_positive_price"),
    (_with(price=-3.5), "non_positive_price"),
    (_with(price=float("nan")), "non_finite_price"),
    (_with(price=float("inf")), "non_finite_price"),
    (_with(price=float("-inf")), "non_finite_price"),
    (_with(price=MAX_PRICE), None),
    (_with(price=MAX_PRICE * 1.5), "price_too_large"),
    (_with(size=0), "non_positive_size"),
    (_with(size=-100), "non_positive_size"),
    (_with(size=10**12), "size_too_large"),
    (_with(ts=0), "early_ts"),
    (_with(seq=-1), "seq_out_of_range"),
    (_with(seq=2**40), "seq_out_of_range"),
    (_with(seq=2**40 - 1), None),
    (_with(ts=_KAFKA_MS + FUTURE_TOLERANCE_MS + 1), "future_ts"),
    (_with(ts=_KAFKA_MS + FUTURE_TOLERANCE_MS), None),
    (_with(ts=2**62), "future_ts"),
    # every rule a tick fails is listed
    (_with(price=-1, size=0, symbol="a b"), "bad_symbol; non_positive_price; non_positive_size"),
    # a live feed's frame that was no PricingData (stockpipe.live.rejected_value)
    (rejected_value(Rejected("not JSON", "{x"), 7, "yahoo-1", "yahoo").decode(), "feed_error"),
    # a live tick with the contract's optional fields
    (_with(bid=84.04, ask=84.06, bid_size=3, source="yahoo"), None),
]


def test_every_tick_reason_code_has_a_case():
    codes = {code for _, r in CASES if r for code in r.split("; ")}
    # invalid_utf8 takes bytes: see the test of bytes that are not UTF-8
    assert codes | {"invalid_utf8"} == set(TICK_REASONS)


def test_validation_gives_each_bad_tick_its_reason(spark):
    values = [v for v, _ in CASES]
    checked = validate_ticks(parse_ticks(_records(spark, values))).orderBy("offset").toPandas()
    got = [None if pd.isna(r) else r for r in checked["reason"]]
    assert got == [r for _, r in CASES]

    validated = validate_ticks(parse_ticks(_records(spark, values)))
    quarantined = quarantined_ticks(validated).orderBy("offset").toPandas()
    bad = [i for i, (_, r) in enumerate(CASES) if r is not None]
    assert quarantined["offset"].tolist() == bad
    assert quarantined["value"].tolist() == [CASES[i][0] for i in bad]  # as received
    good = valid_ticks(validated).toPandas()
    assert len(good) == len(CASES) - len(bad)
    assert good["event_time"].iloc[0] == pd.Timestamp(BASE, unit="ms")


def _compact(**changes) -> str:
    """A tick as the library's producer writes it (no spaces, contract order)."""
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not _DROP}, separators=(",", ":"))


_NOW_MS = int(KAFKA_TS.timestamp() * 1000)
EDGES = [
    _compact(),
    _compact(price=0.0),
    _compact(price=0.0001),
    _compact(price=1e-05),  # written "1e-05": valid, but not the canonical shape
    _compact(price=1e300),
    _compact(price=999_999_999.5),  # canonical, just below MAX_PRICE
    _compact(price=1_000_000_000.5),
    _compact(price=10_000_000_000),
    _compact(price=-1.5),
    _compact(price=float("nan")),
    _compact(size=10**9),
    _compact(size=10**9 + 1),
    _compact(size=0),
    _compact(seq=0),
    _compact(seq=10**12 - 1),
    _compact(seq=2**40),
    _compact(seq=-1),
    _compact(ts=_NOW_MS + FUTURE_TOLERANCE_MS),
    _compact(ts=_NOW_MS + FUTURE_TOLERANCE_MS + 1),
    _compact(ts=2**62),
    _compact(ts=0),
    _compact(symbol="BRK.B"),
    _compact(symbol="a b"),
    _compact(symbol="M&M.NS"),
    _compact(symbol="A" * 32),
    _compact(symbol="A" * 33),
    _compact(symbol=""),
    _compact(producer_id=""),
    _compact(schema_version=2),
    _compact(size=1.5),
    _compact(ts="1"),
    _compact(extra=1),
    _compact() + "\n",
    _compact().replace('"ts":', '"ts":0'),  # a leading zero is not JSON
    _compact().replace('"size":100', '"size":+100'),
    _compact().replace('"price":190.01', '"price":190.'),
]


def test_quarantine_skips_the_parse_only_for_canonical_valid_ticks(spark):
    gen = TickGenerator(TickSpec(symbols=("AAPL", "BRK.B"), seed=2, start_ms=BASE, step_ms=5))
    canonical = [v.decode() for _, v in gen.take(200).messages()]
    values = [v for v, _ in CASES] + EDGES + canonical
    records = _records(spark, values)
    full = quarantined_ticks(validate_ticks(parse_ticks(records))).toPandas()
    fast = quarantined_ticks(validate_ticks(parse_ticks(needs_checking(records)))).toPandas()
    rows = ["offset", "reason", "value"]
    assert fast.sort_values("offset")[rows].values.tolist() == (
        full.sort_values("offset")[rows].values.tolist()
    )
    assert len(full) >= 30  # many kinds of bad tick, each with its reason
    parsed = set(needs_checking(records).toPandas()["offset"])
    first_canonical = len(values) - len(canonical)
    assert parsed.isdisjoint(range(first_canonical, len(values)))  # skipped: no parse
    assert len(CASES) not in parsed  # EDGES[0], the canonical tick
    assert 0 in parsed  # valid, but not compact JSON: parsed
    small = len(CASES) + EDGES.index(_compact(price=1e-05))
    assert small in parsed and small not in set(full["offset"])  # parsed, and valid


def _tick_frame(spark, ticks: pd.DataFrame):
    pdf = ticks.loc[:, ["symbol", "ts", "price", "size", "seq"]].copy()
    pdf["event_time"] = pd.to_datetime(pdf["ts"], unit="ms")
    return spark.createDataFrame(
        pdf[["symbol", "ts", "event_time", "price", "size", "seq"]],
        "symbol STRING, ts LONG, event_time TIMESTAMP, price DOUBLE, size LONG, seq LONG",
    )


@pytest.mark.parametrize(
    ("window", "slide", "seq_base"),
    [
        ("10 seconds", "5 seconds", 0),
        ("1 minute", "15 seconds", 2**40 - 3000),  # ties broken by seq near its limit
        ("7 seconds", "3 seconds", 0),
        ("3 hours", "1 hour", 2**40 - 3000),  # too long to pack: a (time, seq) struct
    ],
)
def test_window_aggregates_equal_pandas(spark, window, slide, seq_base):
    spec = TickSpec(
        symbols=("AAPL", "MSFT", "PENNY"),
        seed=3,
        rate=100,
        start_ms=BASE,
        step_ms=35,
        out_of_order_fraction=0.2,
        out_of_order_max_ms=3000,
        producer_id="p",
    )
    ticks = TickGenerator(spec).take(3000).to_frame()
    ticks.loc[ticks.index % 7 == 0, "ts"] -= ticks["ts"] % 1000  # ties in event time
    ticks["seq"] += seq_base
    got = window_aggregates(
        _tick_frame(spark, ticks), window=window, slide=slide, watermark="5 seconds"
    )
    got_pd = got.toPandas()
    expected = reference_windows(ticks, window=window, slide=slide, watermark=0, closed_only=False)
    assert compare_windows(got_pd, expected) == []
    assert len(expected) > (3 if seq_base and "hour" in window else 20)
    assert (got_pd["date"] == got_pd["window_start"].dt.date).all()


def test_messages_through_parse_validate_window_equal_pandas(spark):
    spec = TickSpec(
        symbols=("AAPL", "XYZ"),
        seed=5,
        rate=50,
        start_ms=BASE,
        step_ms=40,
        out_of_order_fraction=0.1,
        out_of_order_max_ms=2000,
        producer_id="p",
    )
    msgs = TickGenerator(spec).take(1500).messages()
    bad = [_with(price=0, seq=10**6), "garbage", _with(size=-1, seq=10**6 + 1)]
    values = [v.decode() for _, v in msgs] + bad
    keys = [k.decode() for k, _ in msgs] + ["AAPL"] * len(bad)
    validated = validate_ticks(parse_ticks(_records(spark, values, keys)))
    got = window_aggregates(
        valid_ticks(validated), window="10 seconds", slide="5 seconds", watermark="5 seconds"
    ).toPandas()
    ref = reference_windows(
        parse_tick_values(values),
        window="10 seconds",
        slide="5 seconds",
        watermark=0,
        closed_only=False,
    )
    assert compare_windows(got, ref) == []
    assert quarantined_ticks(validated).count() == len(bad)


def _brute_force(ticks, window_ms, slide_ms, delay_ms):
    """Windows the slow way: every tick, every candidate window, one at a time."""
    rows = {}
    newest = None
    ordered = ticks.sort_values("seq").to_dict("records")
    for t in ordered:
        in_force = None if newest is None else newest - delay_ms
        start = (t["ts"] // slide_ms) * slide_ms
        while start + window_ms > t["ts"]:
            if in_force is None or start + window_ms > in_force:
                rows.setdefault((t["symbol"], start), []).append(t)
            start -= slide_ms
        newest = t["ts"] if newest is None else max(newest, t["ts"])
    final = newest - delay_ms
    out = []
    for (sym, start), ts in rows.items():
        if start + window_ms > final:
            continue
        by_time = sorted(ts, key=lambda r: (r["ts"], r["seq"]))
        prices = np.array([r["price"] for r in ts])
        sizes = np.array([r["size"] for r in ts])
        out.append(
            {
                "symbol": sym,
                "window_start": pd.Timestamp(start, unit="ms", tz="UTC"),
                "window_end": pd.Timestamp(start + window_ms, unit="ms", tz="UTC"),
                "open": by_time[0]["price"],
                "high": prices.max(),
                "low": prices.min(),
                "close": by_time[-1]["price"],
                "vwap": float((prices * sizes).sum() / sizes.sum()),
                "volume": int(sizes.sum()),
                "trade_count": len(ts),
                "price_std": float(prices.std(ddof=1)) if len(ts) > 1 else np.nan,
            }
        )
    return pd.DataFrame(out)


def test_reference_drops_late_pairs_like_a_brute_force_count():
    spec = TickSpec(
        symbols=("A", "B"),
        seed=11,
        rate=20,
        start_ms=BASE,
        step_ms=250,
        out_of_order_fraction=0.15,
        out_of_order_max_ms=4000,
        late_fraction=0.05,
        late_by_ms=8000,
        producer_id="p",
    )
    ticks = TickGenerator(spec).take(600).to_frame()
    ref = reference_windows(ticks, window="10 s", slide="5 s", watermark="5 seconds")
    brute = _brute_force(ticks, 10_000, 5_000, 5_000)
    assert compare_windows(ref, brute) == []
    late = late_pairs(ticks, window="10 s", slide="5 s", watermark="5 seconds")
    assert len(late) > 0
    everything = reference_windows(
        ticks, window="10 s", slide="5 s", watermark="5 s", closed_only=False
    )
    closed = everything[everything["window_end"] <= ref["window_end"].max()]
    # every dropped pair is a trade missing from the watermarked answer
    assert closed["trade_count"].sum() - ref["trade_count"].sum() == len(late)


def test_to_ms_reads_spark_and_pandas_intervals():
    assert to_ms("15 seconds") == 15_000
    assert to_ms("1 minute") == 60_000
    assert to_ms(pd.Timedelta("2min")) == 120_000


def test_progress_row_reads_a_progress_event():
    progress = {
        "id": "q-1",
        "runId": "r-1",
        "name": "tick_windows",
        "timestamp": "2024-01-02T15:00:00.000Z",
        "batchId": 7,
        "batchDuration": 1234,
        "numInputRows": 500,
        "inputRowsPerSecond": 250.0,
        "processedRowsPerSecond": 405.2,
        "durationMs": {"addBatch": 1000, "triggerExecution": 1234},
        "eventTime": {"watermark": "2024-01-02T14:59:30.000Z"},
        "stateOperators": [
            {"numRowsTotal": 40, "memoryUsedBytes": 1000, "numRowsDroppedByWatermark": 3},
            {"numRowsTotal": 2, "memoryUsedBytes": 10, "numRowsDroppedByWatermark": 1},
        ],
        # a listener event carries endOffset as JSON text, lastProgress as a dict
        "sources": [{"endOffset": '{"t1": {"0": 5, "1": 7}}'}, {"endOffset": {"t2": {"0": 3}}}],
    }
    row = progress_row(progress)
    assert row["batch_id"] == 7 and row["num_input_rows"] == 500
    assert row["end_offsets"] == {"t1": {"0": 5, "1": 7}, "t2": {"0": 3}}
    assert row["date"] == dt.date(2024, 1, 2)  # the metrics table's partition
    assert row["watermark"] == pd.Timestamp("2024-01-02 14:59:30", tz="UTC")
    assert row["state_rows"] == 42 and row["late_rows_dropped"] == 4
    none_yet = progress_row({**progress, "eventTime": {"watermark": "1970-01-01T00:00:00.000Z"}})
    assert none_yet["watermark"] is None


def test_archive_queries_batch_less_often_unless_told_otherwise(monkeypatch):
    opts = StreamOptions(trigger="2 seconds")
    assert trigger_of(opts, "windows") == "2 seconds"
    assert trigger_of(opts, "archive") == "15 seconds"
    same = StreamOptions(trigger="2 seconds", archive_trigger=None)
    assert {trigger_of(same, r) for r in ("windows", "archive")} == {"2 seconds"}
    args = stream_options(monkeypatch, "--trigger", "3 seconds", "--archive-trigger", "1 minute")
    assert (args.trigger, args.archive_trigger) == ("3 seconds", "1 minute")
    assert stream_options(monkeypatch) == StreamOptions()  # the command's defaults are the job's


def stream_options(monkeypatch, *argv: str) -> StreamOptions:
    """The options `stockpipe stream` runs with."""
    from typer.testing import CliRunner

    from stockpipe.cli import app

    seen: list[StreamOptions] = []
    monkeypatch.setattr("stockpipe.config.get_settings", lambda: None)
    monkeypatch.setattr(streaming, "run_stream", lambda _s, opts, **_: seen.append(opts) or "ok")
    out = CliRunner().invoke(app, ["stream", *argv])
    assert out.exit_code == 0, out.output
    return seen[0]


def test_metrics_are_written_a_few_batches_per_commit_and_a_failed_write_keeps_its_rows(
    monkeypatch,
):
    writes: list[list[int]] = []
    fail = {"now": True}

    def write(_settings, rows):
        if fail["now"]:
            raise OSError("lake unreachable")
        writes.append([r["batch_id"] for r in rows])

    monkeypatch.setattr(streaming, "write_metrics", write)
    recorder = ProgressRecorder(None, {"q"}, flush_every_s=3600)

    class Event:
        def __init__(self, batch: int, name: str = "q") -> None:
            self.progress = {"name": name, "id": "i", "runId": "r", "batchId": batch,
                             "timestamp": "2024-01-02T15:00:00.000Z"}  # fmt: skip

    for b in range(3):
        recorder.onQueryProgress(Event(b))
    recorder.onQueryProgress(Event(9, name="someone else's query"))
    assert recorder.flush() == 0 and writes == []  # not due yet
    assert recorder.flush(force=True) == 0  # the write fails: noted, rows kept, no raise
    assert recorder.errors == ["OSError: lake unreachable"]
    recorder.onQueryProgress(Event(3))
    fail["now"] = False
    assert recorder.flush(force=True) == 4
    assert writes == [[0, 1, 2, 3]]  # one commit, the failed rows first
    assert recorder.last_batch == {"q": 3} and recorder.rows.qsize() == 4


def test_bytes_that_are_not_utf8_are_quarantined_readable_and_kept_exactly(spark):
    import base64

    garbage = b"\xff\xfe\x00 not a tick"
    bad_symbol = _with(symbol="AAXPL").encode().replace(b"AAXPL", b"AA\xffPL")
    rows = [
        (b"K\xff", garbage, "stock.ticks", 0, 0, KAFKA_TS),
        (b"AAPL", bad_symbol, "stock.ticks", 0, 1, KAFKA_TS),
        (b"AAPL", _with().encode(), "stock.ticks", 0, 2, KAFKA_TS),
    ]
    schema = (
        "key BINARY, value BINARY, topic STRING, partition INT, offset LONG, timestamp TIMESTAMP"
    )
    records = spark.createDataFrame(rows, schema)
    # pyarrow (every reader of the lake) must be able to read what the zones hold
    raw = raw_from_kafka(records).orderBy("offset").toArrow().to_pylist()
    assert [base64.b64decode(r["value_b64"]) if r["value_b64"] else None for r in raw] == [
        garbage,
        bad_symbol,
        None,
    ]
    assert raw[0]["key"] == "K\ufffd" and raw[2]["value"] == _with()
    validated = validate_ticks(parse_ticks(records))
    quarantined = quarantined_ticks(validated).orderBy("offset").toArrow().to_pylist()
    assert [q["reason"] for q in quarantined] == [
        "invalid_utf8; unparsable_json",
        "invalid_utf8; bad_symbol",
    ]
    assert [base64.b64decode(q["value_b64"]) for q in quarantined] == [garbage, bad_symbol]
    assert valid_ticks(validated).count() == 1


def test_a_tick_may_be_ahead_of_its_kafka_time_by_no_more_than_the_watermark_delay():
    assert tick_transforms.future_tolerance("30 seconds") == 30_000
    assert tick_transforms.future_tolerance("1 hour") == FUTURE_TOLERANCE_MS


# The fast path agrees with the full parse, on generated near-canonical ticks ----------


def _compact_ticks():
    from hypothesis import strategies as st

    numbers = st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=1e-6, max_value=2e9),
    )
    symbols = st.text("AZaz09.^=&_/-; é", min_size=0, max_size=40)
    fields = st.fixed_dictionaries(
        {
            "schema_version": st.sampled_from([1, 1, 1, 2, 0]),
            "symbol": symbols,
            "ts": st.one_of(st.integers(-10, 2**62), st.just(_NOW_MS)),
            "price": numbers,
            "size": numbers,
            "seq": numbers,
            "producer_id": st.text("ab:._-x ", min_size=0, max_size=70),
        }
    )
    return st.lists(fields.map(lambda d: json.dumps(d, separators=(",", ":"))), max_size=200)


def test_the_canonical_fast_path_never_disagrees_with_the_full_parse(spark):
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(values=_compact_ticks())
    def check(values):
        records = _records(spark, values)
        full = quarantined_ticks(validate_ticks(parse_ticks(records))).toPandas()
        fast = quarantined_ticks(validate_ticks(parse_ticks(needs_checking(records)))).toPandas()
        rows = ["offset", "reason"]
        assert fast.sort_values("offset")[rows].values.tolist() == (
            full.sort_values("offset")[rows].values.tolist()
        )

    check()
