"""The batch job's pure transforms on tiny in-memory frames.

Expected values come from the inputs (for validation) or from an independent
pandas computation (dedupe, derived columns), never from the code under test.
Instants are compared as epoch microseconds so no time zone can hide a shift.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructType
from pyspark.testing import assertDataFrameEqual

from stockpipe.schemas import (
    BAR_COLUMNS,
    BAR_MESSAGE_DDL,
    BAR_REASONS,
    BAR_TYPED_FIELDS,
    DERIVED_COLUMNS,
    FUTURE_SKEW_S,
    MAX_PRICE,
    MAX_RECORD_BYTES,
    MAX_VOLUME,
    PARTITION_COLUMNS,
    QUARANTINE_COLUMNS,
    RAW_ZONE_COLUMNS,
)
from stockpipe.spark import transforms as T
from stockpipe.spark.records import kafka_records, raw_from_kafka

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
KAFKA_TS = datetime(2024, 1, 3, 0, 0, 1, tzinfo=UTC)
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)
DROP = object()  # marks a field to leave out of a message

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "symbol": "aapl",
    "interval": "1d",
    "ts": "2024-01-02T14:30:00.000Z",
    "open": 10.0,
    "high": 11.0,
    "low": 9.0,
    "close": 10.5,
    "adj_close": 10.4,
    "volume": 100,
    "source": "csv",
    "ingested_at": "2024-01-03T00:00:00.000Z",
    "batch_id": "b1",
}


def message(**changes: Any) -> bytes:
    """A bar message: GOOD with some fields changed (DROP removes one)."""
    msg = {**GOOD, **changes}
    return json.dumps({k: v for k, v in msg.items() if v is not DROP}).encode()


def kafka_frame(spark: SparkSession, values: list[bytes | None]) -> DataFrame:
    """Rows shaped like Spark's Kafka source; offset i is values[i]."""
    rows = [(b"AAPL", v, "stock.bars", 0, i, KAFKA_TS, 0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


@contextmanager
def session_time_zone(spark: SparkSession, zone: str) -> Iterator[None]:
    old = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", zone)
    try:
        yield
    finally:
        spark.conf.set("spark.sql.session.timeZone", old)


def micros(ts: str | pd.Timestamp) -> int:
    """Epoch microseconds of an instant, computed by pandas."""
    return pd.Timestamp(ts).value // 1000


# Validation: one frame with a good record and one record per case ----------------------

#: One record per reason code that fails exactly that rule.
RULE_CASES: dict[str, bytes | None] = {
    "invalid_utf8": message().replace(b'"b1"', b'"b\xff1"'),
    # never parsed, so no other rule is tried on it
    "record_too_large": message(batch_id="x" * MAX_RECORD_BYTES),
    "unparsable_json": b'{"symbol": "AAPL", "interval": "1d", "open": 1',
    "wrong_type_schema_version": message(schema_version="one"),
    "wrong_type_open": message(open="abc"),
    "wrong_type_high": message(high=True),
    "wrong_type_low": message(low={"v": 9}),
    "wrong_type_close": message(close=[10.5]),
    "wrong_type_adj_close": message(adj_close="10.4"),
    "wrong_type_volume": message(volume=1.5),
    "missing_schema_version": message(schema_version=DROP),
    "missing_symbol": message(symbol=DROP),
    "missing_interval": message(interval=None),
    "missing_ts": message(ts=DROP),
    "missing_open": message(open=DROP),
    "missing_high": message(high=None),
    "missing_low": message(low=DROP),
    "missing_close": message(close=DROP),
    "missing_volume": message(volume=DROP),
    "bad_timestamp_ts": message(ts="2024-01-02 14:30:00"),
    "bad_timestamp_ingested_at": message(ingested_at="yesterday"),
    "unknown_schema_version": message(schema_version=2),
    "bad_symbol": message(symbol="AAPL;DROP"),
    "unknown_interval": message(interval="2d"),
    "non_finite_price": message(low="NaN"),
    "non_positive_price": message(low=0.0),
    "high_below_range": message(high=10.2),
    "low_above_range": message(low=10.2),
    "price_too_large": message(adj_close=MAX_PRICE * 2),
    "negative_volume": message(volume=-1),
    "volume_too_large": message(volume=MAX_VOLUME + 1),
    "early_ts": message(ts="1899-12-31T23:59:59.999Z"),
    # KAFKA_TS plus the skew allowance (FUTURE_SKEW_S), plus a millisecond
    "future_ts": message(ts="2024-01-03T00:05:01.001Z"),
    "future_ingested_at": message(ingested_at="2024-01-03T00:05:01.001Z"),
}

#: Records that are not a JSON object of the message shape, with their reasons.
UNPARSABLE_CASES: dict[str, tuple[bytes | None, list[str]]] = {
    "garbage bytes": (b"\x00\xff\xfe\x80garbage", ["invalid_utf8", "unparsable_json"]),
    "truncated": (message()[:-5], ["unparsable_json"]),
    "empty array": (b"[]", ["unparsable_json"]),
    "array of objects": (b"[" + message() + b"]", ["unparsable_json"]),
    "string": (b'"x"', ["unparsable_json"]),
    "number": (b"42", ["unparsable_json"]),
    "json null": (b"null", ["unparsable_json"]),
    "open brace": (b"{", ["unparsable_json"]),
    "empty value": (b"", ["unparsable_json"]),
    "tombstone": (None, ["unparsable_json"]),
    "quoted number": (message(volume="100"), ["wrong_type_volume"]),
    "two wrong types": (message(open="abc", volume="x"), ["wrong_type_open", "wrong_type_volume"]),
}

#: Records with two faults: every failed rule is listed, in BAR_REASONS order.
MULTI_CASES: dict[str, tuple[bytes, list[str]]] = {
    "negative volume in the future": (
        message(volume=-5, ts="2030-01-01T00:00:00Z"),
        ["negative_volume", "future_ts"],
    ),
    "no symbol, unknown interval": (
        message(symbol=DROP, interval="1w"),
        ["missing_symbol", "unknown_interval"],
    ),
    "negative adj_close and infinite high": (
        message(adj_close=-1.0, high="Infinity"),
        ["non_finite_price", "non_positive_price"],
    ),
    "a year-1 bar from the far future's producer": (
        message(ts="0001-01-01T00:00:00Z", ingested_at="9999-12-31T00:00:00Z"),
        ["early_ts", "future_ingested_at"],
    ),
    "a symbol too long and a huge price": (
        message(symbol="A" * 33, high=1e300),
        ["bad_symbol", "price_too_large"],
    ),
    "a newer schema with a control character in the symbol": (
        message(schema_version=3, symbol="AA\u0000PL"),
        ["unknown_schema_version", "bad_symbol"],
    ),
}

GOOD_VARIANTS: dict[str, bytes] = {
    "good": message(),
    "no adj_close": message(adj_close=None),
    "no optional fields": message(adj_close=DROP, source=DROP, ingested_at=DROP, batch_id=DROP),
    "offset zone": message(ts="2024-01-02T15:30:00+01:00", symbol=" msft "),
    "at now": message(ts="2024-01-03T00:05:01Z", symbol="now"),
    "index": message(symbol="^GSPC", ts="1927-12-30T00:00:00Z"),
    "at the bounds": message(
        symbol="M&M.NS", ts="1900-01-01T00:00:00Z", high=MAX_PRICE, volume=MAX_VOLUME
    ),
    "currency and class shares": message(symbol="EURUSD=X"),
    "share class": message(symbol="brk-b", ingested_at="2024-01-03T00:05:01Z"),
    "32 characters": message(symbol="A" * 32),
}

ALL_CASES: dict[str, bytes | None] = {
    **GOOD_VARIANTS,
    **RULE_CASES,
    **{k: v for k, (v, _) in UNPARSABLE_CASES.items()},
    **{k: v for k, (v, _) in MULTI_CASES.items()},
}
OFFSET = {name: i for i, name in enumerate(ALL_CASES)}


@pytest.fixture(scope="module")
def validated(spark: SparkSession) -> dict[str, Any]:
    """Every case in one frame, validated once; rows keyed by case name."""
    raw = raw_from_kafka(kafka_frame(spark, list(ALL_CASES.values())))
    valid, quarantine = T.validate_bars(T.parse_bars(raw), NOW)
    name = {i: n for n, i in OFFSET.items()}
    valid_rows = valid.withColumn("ts_us", F.unix_micros("ts")).collect()
    quarantine_rows = quarantine.withColumn(
        "quarantined_us", F.unix_micros("quarantined_at")
    ).collect()
    return {
        "valid": {name[r.offset]: r for r in valid_rows},
        "quarantine": {name[r.offset]: r for r in quarantine_rows},
        "valid_columns": valid.columns,
        "quarantine_columns": quarantine.columns,
    }


def test_every_reason_code_has_a_case():
    assert set(RULE_CASES) == set(BAR_REASONS)


@pytest.mark.parametrize("code", list(RULE_CASES))
def test_each_rule_quarantines_with_exactly_its_reason(validated, code):
    row = validated["quarantine"][code]
    assert row.reasons == [code]
    assert row.reason == code
    assert code not in validated["valid"]
    assert "good" in validated["valid"]


@pytest.mark.parametrize("case", list(UNPARSABLE_CASES))
def test_unparsable_records_are_quarantined(validated, case):
    _value, reasons = UNPARSABLE_CASES[case]
    assert validated["quarantine"][case].reasons == reasons


@pytest.mark.parametrize("case", list(MULTI_CASES))
def test_a_record_with_two_faults_lists_both(validated, case):
    row = validated["quarantine"][case]
    assert row.reasons == MULTI_CASES[case][1]
    assert row.reason == "; ".join(MULTI_CASES[case][1])


def test_nothing_is_lost_and_good_variants_stay_valid(validated):
    assert set(validated["valid"]) == set(GOOD_VARIANTS)
    assert set(validated["valid"]) | set(validated["quarantine"]) == set(ALL_CASES)
    assert not set(validated["valid"]) & set(validated["quarantine"])


def test_census_counts_and_places_a_batch(spark):
    from collections import Counter

    from stockpipe.spark.batch import BatchCensus

    later = [message(interval="1h", ts="2021-03-04T10:00:00Z"), message(interval="1h")]
    values = [*ALL_CASES.values(), *later]
    flagged = T.flag_bars(T.parse_bars(raw_from_kafka(kafka_frame(spark, values))), NOW)
    got = BatchCensus.of(T.census(flagged).collect())

    expected_reasons = Counter({code: 1 for code in RULE_CASES})
    for _value, reasons in [*UNPARSABLE_CASES.values(), *MULTI_CASES.values()]:
        expected_reasons.update(reasons)
    assert got.records == len(ALL_CASES) + 2
    assert got.quarantined == expected_reasons
    assert got.quarantined_rows == len(ALL_CASES) - len(GOOD_VARIANTS)
    # the good variants are daily bars from 1900 (the bound) to 2024; the hourly
    # ones span 2021 to 2024. The year-1 bar is quarantined and bounds nothing.
    spans = {i: (lo.year, hi.year, n) for i, (lo, hi, n) in got.valid.items()}
    assert spans == {"1d": (1900, 2024, len(GOOD_VARIANTS)), "1h": (2021, 2024, 2)}
    assert got.partitions() == {f"interval=1d/year={y}" for y in range(1900, 2025)} | {
        f"interval=1h/year={y}" for y in range(2021, 2025)
    }


def test_census_size_does_not_depend_on_unvalidated_values(spark):
    """Hostile intervals and timestamps of quarantined rows reach the driver as
    reason codes only: one census row per reason, whatever their values."""
    hostile = [message(interval=f"x{i}" * 50) for i in range(300)] + [
        message(ts=f"{1 + i:04d}-01-01T00:00:00Z") for i in range(300)
    ]
    flagged = T.flag_bars(T.parse_bars(raw_from_kafka(kafka_frame(spark, hostile))), NOW)
    rows = T.census(flagged).collect()
    assert sorted((r.reason, r.interval, r.first_ts, r.rows) for r in rows) == [
        ("early_ts", None, None, 300),
        ("unknown_interval", None, None, 300),
    ]


def test_quarantine_keeps_the_record_as_received(validated):
    assert validated["quarantine_columns"] == list(QUARANTINE_COLUMNS)
    for name, row in validated["quarantine"].items():
        sent = ALL_CASES[name]
        received = base64.b64decode(row.value_b64) if row.value_b64 else row.value
        if isinstance(received, str):
            received = received.encode()
        assert received == sent, name
        assert (row.topic, row.partition, row.offset) == ("stock.bars", 0, OFFSET[name])
        assert row.key == "AAPL"
        assert row.quarantined_us == micros(NOW.isoformat())
    assert validated["quarantine"]["wrong_type_open"].symbol == "AAPL"
    assert validated["quarantine"]["wrong_type_open"].source == "csv"
    assert validated["quarantine"]["tombstone"].symbol is None


def test_valid_rows_are_typed_bars(validated):
    assert validated["valid_columns"] == [*BAR_COLUMNS, "partition", "offset", "kafka_timestamp"]
    good = validated["valid"]["good"]
    assert good.symbol == "AAPL"  # upper-cased
    assert (good.open, good.high, good.low, good.close, good.adj_close) == (10, 11, 9, 10.5, 10.4)
    assert good.volume == 100
    assert validated["valid"]["no adj_close"].adj_close is None
    assert validated["valid"]["offset zone"].symbol == "MSFT"  # trimmed too


def test_iso_timestamps_are_read_as_utc_instants(validated):
    good = validated["valid"]["good"]
    assert good.ts_us == micros("2024-01-02T14:30:00Z")
    # +01:00 names the same instant as 14:30Z
    assert validated["valid"]["offset zone"].ts_us == micros("2024-01-02T14:30:00Z")
    # a bar stamped exactly at its Kafka time plus the skew allowance is not in the future
    allowed = pd.Timestamp(KAFKA_TS) + pd.Timedelta(seconds=FUTURE_SKEW_S)
    assert validated["valid"]["at now"].ts_us == micros(allowed)


def test_timestamps_do_not_depend_on_the_session_time_zone(spark):
    values = [message(ts=s) for s in ("2024-01-02T14:30:00.000Z", "2024-07-01T23:59:59.5Z")]
    with session_time_zone(spark, "America/New_York"):
        parsed = T.parse_bars(raw_from_kafka(kafka_frame(spark, values)))
        got = [r.us for r in parsed.select(F.unix_micros("ts").alias("us")).collect()]
    assert got == [micros("2024-01-02T14:30:00Z"), micros("2024-07-01T23:59:59.5Z")]


#: Timestamp texts at the edges of iso_shaped and of TS_FORMAT.
TS_EDGES = [
    "2024-01-02T14:30:00Z",
    "2024-01-02T14:30:00.000Z",
    "2024-01-02T14:30:00.5Z",
    "2024-01-02T14:30:00.1234567Z",
    "2024-01-02T14:30:00.123456789+05:30",
    "2024-01-02T14:30:00-00:00",
    "2024-01-02T14:30:00+18:00",
    "2024-01-02T14:30:00+18:01",
    "2024-01-02T14:30:00+14:60",
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-01-32T00:00:00Z",
    "2024-01-02T24:00:00Z",
    "2024-01-02T23:59:60Z",
    "2024-01-02T23:60:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "2024-01-02T14:30:00Z\n",
    " 2024-01-02T14:30:00Z",
    "2024-01-02T14:30:00",
    "2024-01-02T14:30Z",
    "2024-01-02 14:30:00Z",
    "2024-01-02T14:30:00.Z",
    "2024-01-02T14:30:00.1234567890Z",
    "2024-01-02T14:30:00+0530",
    "2024-01-02T14:30:00 UTC",
    "20240-01-02T14:30:00Z",
    "2024-1-2T14:30:00Z",
    "2024-0a-02T14:30:00Z",
    "2024-01-02T14:30:00.1a3Z",
    "2024-01-02T14:30:00.-1Z",
    "2024-01-02T14:30:00+1a:00",
    "2024-01-02T14:30:00.123Z+01:00",
    "2024-01-02T14:30:00.12+05:30",
    "2024-01-02T14:30:00.+05:30",
    "2024-01-02T14:30:00Z+05:30",
    "2024-01-02T14:30:00++05:30",
    "2024-01-02T14:30:00-05:3Z",
    "+2024-01-02T14:30:00Z",
    "",
    None,
]


def test_the_fast_timestamp_read_agrees_with_the_format(spark):
    df = spark.createDataFrame([(t,) for t in TS_EDGES], "t string")
    got = df.select(
        "t",
        F.unix_micros(T.utc_timestamp(F.col("t"))).alias("fast"),
        F.unix_micros(F.try_to_timestamp("t", F.lit(T.TS_FORMAT))).alias("format"),
        T.iso_shaped(F.col("t")).alias("fast_path"),
    ).collect()
    assert [(r.t, r.fast) for r in got] == [(r.t, r.format) for r in got]
    # both paths are exercised, and the cast path reads real instants
    assert sum(bool(r.fast_path) for r in got) >= 15
    assert got[1].fast == micros("2024-01-02T14:30:00Z")
    assert got[4].fast == micros("2024-01-02T09:00:00.123456Z")


def test_each_value_is_parsed_once_in_the_plan(spark, capsys):
    raw = raw_from_kafka(kafka_frame(spark, [message()]))
    valid, quarantine = T.validate_bars(T.parse_bars(raw), NOW)
    for df in (valid, quarantine):
        df.explain()
        assert capsys.readouterr().out.count("from_json(") == 1


def test_typed_fields_are_the_non_string_fields_of_the_message(spark):
    schema = StructType.fromDDL(BAR_MESSAGE_DDL)
    assert isinstance(schema, StructType)
    expected = [f.name for f in schema.fields if not isinstance(f.dataType, StringType)]
    assert list(BAR_TYPED_FIELDS) == expected


# Raw zone ------------------------------------------------------------------------------


def test_raw_from_kafka_keeps_every_record_and_its_bytes(spark):
    late = datetime(2024, 1, 3, 2, 30, tzinfo=UTC)  # still January 2 in New York
    rows = [
        (b"AAPL", message(), "stock.bars", 1, 7, late, 0),
        (None, b"\xff\xfebad", "stock.bars", 2, 8, late, 0),
        (b"MSFT", None, "stock.bars", 0, 9, late, 0),
        (b"K\xff\x00", message(), "stock.bars", 0, 10, late, 0),
    ]
    with session_time_zone(spark, "America/New_York"):
        kafka = spark.createDataFrame(rows, KAFKA_SCHEMA)
        raw = raw_from_kafka(kafka)
        got = raw.withColumn("ts_us", F.unix_micros("kafka_timestamp")).collect()
    assert raw.columns == [*RAW_ZONE_COLUMNS]
    by_offset = {r.offset: r for r in got}
    assert by_offset[7].value == message().decode()
    assert by_offset[7].value_b64 is None
    assert by_offset[8].value_b64 is not None
    assert base64.b64decode(by_offset[8].value_b64) == b"\xff\xfebad"
    assert by_offset[8].key is None
    assert by_offset[9].value is None
    assert by_offset[10].key == "K\ufffd\x00" and by_offset[7].key_b64 is None
    assert base64.b64decode(by_offset[10].key_b64) == b"K\xff\x00"
    # and back: the records exactly as Kafka gave them (a rebuild from raw reads these)
    back = kafka_records(raw).orderBy("offset").collect()
    assert [(r.key, r.value) for r in back] == [(r[0], r[1]) for r in rows]
    for r in got:
        assert (r.topic, r.ts_us) == ("stock.bars", micros(late.isoformat()))
        assert r.ingest_date == late.date()
    assert {(r.partition, r.offset) for r in got} == {(1, 7), (2, 8), (0, 9), (0, 10)}


# Dedupe --------------------------------------------------------------------------------

BAR_DDL = (
    "symbol string, interval string, ts timestamp, open double, high double, low double, "
    "close double, adj_close double, volume bigint, source string, ingested_at timestamp, "
    "batch_id string"
)
VALID_DDL = f"{BAR_DDL}, partition int, offset bigint, kafka_timestamp timestamp"


def _bar(symbol: str, day: int, close: float, ingested: datetime | None, **extra: Any) -> tuple:
    ts = datetime(2024, 1, day, tzinfo=UTC)
    row = (symbol, "1d", ts, close, close + 1, close - 1, close, None, 100, "csv", ingested, "b")
    return (*row, *extra.values())


def test_dedupe_keeps_the_latest_ingestion_like_pandas(spark):
    rng = np.random.default_rng(7)
    base = datetime(2024, 2, 1, tzinfo=UTC)
    rows = []
    for i in range(60):
        symbol = ["AAA", "BBB"][i % 2]
        day = int(rng.integers(1, 6))
        # few distinct values, so ties on ingested_at and kafka_timestamp happen
        ingested = None if i % 11 == 0 else base + timedelta(hours=int(rng.integers(0, 3)))
        kafka_ts = base + timedelta(minutes=int(rng.integers(0, 2)))
        rows.append(_bar(symbol, day, float(i + 1), ingested, p=i % 3, o=i, k=kafka_ts))
    df = spark.createDataFrame(rows, VALID_DDL)

    pdf = pd.DataFrame(rows, columns=[*BAR_COLUMNS, "partition", "offset", "kafka_timestamp"])
    pdf["ingested_at"] = pd.to_datetime(pdf["ingested_at"], utc=True)
    expected = (
        pdf.sort_values(
            ["ingested_at", "kafka_timestamp", "offset"], ascending=False, na_position="last"
        )
        .drop_duplicates(["symbol", "interval", "ts"], keep="first")
        .sort_values("offset")
    )
    got = T.dedupe_bars(df).orderBy("offset")
    assert got.columns == df.columns
    assert [r.offset for r in got.select("offset").collect()] == expected["offset"].tolist()
    assert T.count_duplicates(df) == len(pdf) - len(expected)
    assert T.count_duplicates(got) == 0


def test_a_corrected_bar_replaces_the_old_one_across_runs(spark):
    first = datetime(2024, 1, 10, tzinfo=UTC)
    later = datetime(2024, 1, 11, tzinfo=UTC)
    new_rows = spark.createDataFrame(
        [
            _bar("AAA", 2, 20.5, later, p=0, o=5, k=later),  # correction of day 2
            _bar("AAA", 3, 30.0, first, p=0, o=6, k=later),  # re-sent unchanged
            _bar("AAA", 4, 40.0, later, p=0, o=7, k=later),  # new
        ],
        VALID_DDL,
    )
    previous = [_bar("AAA", d, 10.0 * d, first) for d in (1, 2, 3)]
    # processed/ rows as written by an earlier run: no Kafka columns, derived + year
    existing = T.for_processed_write(T.add_derived(spark.createDataFrame(previous, BAR_DDL)))
    both = existing.unionByName(new_rows, allowMissingColumns=True)

    out = T.dedupe_bars(both).select(F.dayofmonth("ts").alias("day"), "close")
    got = {r.day: r.close for r in out.collect()}
    assert got == {1: 10.0, 2: 20.5, 3: 30.0, 4: 40.0}
    assert T.count_duplicates(both) == 2


# Derived columns -----------------------------------------------------------------------

SERIES = [  # symbol, interval, bars, adj_close: "none" | "all" | "some"
    ("AAA", "1d", 75, "none"),
    ("AAA", "1h", 30, "all"),
    ("BBB", "1d", 64, "all"),
    ("CCC", "1d", 55, "some"),
    ("DDD", "1d", 12, "some"),
]


def history_frame() -> pd.DataFrame:
    """Random-walk bars for several series, rows shuffled."""
    rng = np.random.default_rng(42)
    frames = []
    for symbol, interval, n, adj in SERIES:
        step = pd.Timedelta("1d" if interval == "1d" else "1h")
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        spread = rng.uniform(0.001, 0.03, n)
        adj_close = close * rng.uniform(0.95, 1.0, n)
        if adj == "none":
            adj_close[:] = np.nan
        elif adj == "some":
            adj_close[rng.random(n) < 0.4] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "interval": interval,
                    "ts": pd.Timestamp("2023-11-01", tz="UTC") + step * np.arange(n),
                    "open": close * (1 + rng.normal(0, 0.002, n)),
                    "high": close * (1 + spread),
                    "low": close * (1 - spread),
                    "close": close,
                    "adj_close": adj_close,
                    "volume": rng.integers(1, 10_000, n),
                    "source": "synthetic",
                    "ingested_at": pd.Timestamp("2024-03-01", tz="UTC"),
                    "batch_id": "b",
                }
            )
        )
    return pd.concat(frames).sample(frac=1, random_state=1).reset_index(drop=True)


def pandas_derived(pdf: pd.DataFrame) -> pd.DataFrame:
    """The derived columns computed with pandas rolling windows, per series."""
    out = []
    for _, g in pdf.sort_values("ts").groupby(["symbol", "interval"]):
        g = g.copy()
        price = g["adj_close"].fillna(g["close"])
        g["return"] = price / price.shift(1) - 1
        g["log_return"] = np.log(price / price.shift(1))
        g["sma_20"] = price.rolling(20).mean()
        g["sma_50"] = price.rolling(50).mean()
        g["volatility_20"] = g["log_return"].rolling(20).std(ddof=1)
        g["range_pct"] = (g["high"] - g["low"]) / g["close"] * 100
        out.append(g)
    return pd.concat(out)


def to_spark(spark: SparkSession, pdf: pd.DataFrame) -> DataFrame:
    """A Spark bar frame from pandas: NaN adj_close becomes null, instants kept."""
    rows = [
        (
            *r[:2],
            r[2].to_pydatetime(),
            *r[3:7],
            None if pd.isna(r[7]) else r[7],
            int(r[8]),
            r[9],
            r[10].to_pydatetime(),
            r[11],
        )
        for r in pdf.loc[:, list(BAR_COLUMNS)].itertuples(index=False, name=None)
    ]
    return spark.createDataFrame(rows, BAR_DDL)


def keyed(df: DataFrame) -> DataFrame:
    """Derived columns keyed by series and epoch micros, in a fixed order."""
    return df.select(
        "symbol", "interval", F.unix_micros("ts").alias("ts_us"), *DERIVED_COLUMNS
    ).orderBy("symbol", "interval", "ts_us")


def test_derived_columns_match_pandas(spark):
    pdf = history_frame()
    expected_pdf = pandas_derived(pdf)

    def number(v: Any) -> float | None:
        return None if pd.isna(v) else float(v)

    rows = [
        Row(
            symbol=r["symbol"],
            interval=r["interval"],
            ts_us=micros(r["ts"]),
            **{c: number(r[c]) for c in DERIVED_COLUMNS},
        )
        for r in expected_pdf.to_dict("records")
    ]
    schema = "symbol string, interval string, ts_us bigint, " + ", ".join(
        f"`{c}` double" for c in DERIVED_COLUMNS
    )
    expected = spark.createDataFrame(rows, schema).orderBy("symbol", "interval", "ts_us")

    actual = keyed(T.add_derived(to_spark(spark, pdf)))
    assertDataFrameEqual(actual, expected, checkRowOrder=True, rtol=1e-9, atol=1e-9)

    # nulls until enough bars exist, per series
    nulls = (
        actual.groupBy("symbol", "interval")
        .agg(*[F.count_if(F.col(c).isNull()).alias(c) for c in DERIVED_COLUMNS])
        .collect()
    )
    sizes = {(s, i): n for s, i, n, _ in SERIES}
    for r in nulls:
        n = sizes[(r.symbol, r.interval)]
        assert r["return"] == r.log_return == 1
        assert (r.sma_20, r.sma_50, r.volatility_20) == (min(19, n), min(49, n), min(20, n))
        assert r.range_pct == 0


def test_derived_columns_are_the_same_incrementally(spark):
    pdf = history_frame()
    cutoff = pd.Timestamp("2023-12-10", tz="UTC")  # splits AAA, BBB, CCC 1d inside their windows
    everything = T.add_derived(to_spark(spark, pdf))

    # an earlier run wrote the history; this run brings the rest as valid rows
    existing = T.for_processed_write(T.add_derived(to_spark(spark, pdf[pdf.ts < cutoff])))
    new = (
        to_spark(spark, pdf[pdf.ts >= cutoff])
        .withColumn("partition", F.lit(0))
        .withColumn("offset", F.monotonically_increasing_id())
        .withColumn("kafka_timestamp", F.lit(KAFKA_TS))
    )
    both = existing.unionByName(new, allowMissingColumns=True)
    incremental = T.add_derived(T.dedupe_bars(both))

    is_new = F.col("ts") >= F.lit(cutoff.to_pydatetime())
    assertDataFrameEqual(
        keyed(incremental.filter(is_new)),
        keyed(everything.filter(is_new)),
        checkRowOrder=True,
        rtol=1e-9,
        atol=1e-9,
    )


# Processed layout ----------------------------------------------------------------------


def test_for_processed_write_orders_columns_and_takes_the_utc_year(spark):
    pdf = history_frame()
    edge = pdf.iloc[[0]].assign(ts=pd.Timestamp("2024-01-01T00:30:00Z"), symbol="EDGE")
    pdf = pd.concat([pdf, edge])
    with session_time_zone(spark, "America/New_York"):  # local year there is 2023
        out = T.for_processed_write(T.add_derived(to_spark(spark, pdf)))
        got = out.select("symbol", F.unix_micros("ts").alias("us"), "year").collect()
    assert out.columns == [*BAR_COLUMNS, *DERIVED_COLUMNS, "year"]
    expected = {(s, micros(t)): t.year for s, t in zip(pdf.symbol, pdf.ts, strict=True)}
    assert {(r.symbol, r.us): r.year for r in got} == expected


def test_processed_files_are_sorted_by_symbol_and_ts(spark, tmp_path: Path):
    pdf = history_frame()
    out = T.for_processed_write(T.add_derived(to_spark(spark, pdf)))
    out.write.partitionBy(*PARTITION_COLUMNS).parquet(str(tmp_path / "bars"))

    files = sorted((tmp_path / "bars").glob("interval=*/year=*/*.parquet"))
    dirs = {f.parent for f in files}
    assert len(files) == len(dirs)  # one file per partition directory
    assert {(d.parent.name, d.name) for d in dirs} == {
        (f"interval={i}", f"year={y}") for i, y in zip(pdf.interval, pdf.ts.dt.year, strict=True)
    }
    rows = 0
    for f in files:
        table = pq.read_table(f, columns=["symbol", "ts"]).to_pandas()
        rows += len(table)
        assert table.equals(table.sort_values(["symbol", "ts"]).reset_index(drop=True)), f
    assert rows == len(pdf)
