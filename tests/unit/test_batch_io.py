"""The batch job's context scans select the rows they describe (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from stockpipe.spark.batch_io import Scan, _spark_filter


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    start = datetime(2019, 12, 20, tzinfo=UTC)
    out = {"symbol": [], "interval": [], "ts": [], "year": []}
    for symbol in ("AAA", "BBB", "CCC"):
        for interval, step in (("1d", timedelta(days=1)), ("1h", timedelta(hours=7))):
            for i in range(40):
                ts = start + i * step
                for col, v in zip(out, (symbol, interval, ts, ts.year), strict=True):
                    out[col].append(v)
    return pa.table(
        {
            "symbol": pa.array(out["symbol"]),
            "interval": pa.array(out["interval"]),
            "ts": pa.array(out["ts"], pa.timestamp("us", "UTC")),
            "year": pa.array(out["year"], pa.int32()),
        }
    )


def keys(table: pa.Table) -> set[tuple]:
    cols = [table.column(c).to_pylist() for c in ("symbol", "interval", "ts")]
    return set(zip(*cols, strict=True))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SCANS = {
    "since, one symbol": [Scan("1d", ("AAA",), since=datetime(2020, 1, 3, tzinfo=UTC))],
    "before, two symbols": [Scan("1d", ("AAA", "CCC"), before=datetime(2020, 1, 2, tzinfo=UTC))],
    "two intervals": [
        Scan("1d", ("BBB",), since=datetime(2019, 12, 31, 12, tzinfo=UTC)),
        Scan("1h", ("AAA", "BBB"), before=datetime(2019, 12, 25, tzinfo=UTC)),
    ],
    "a window": [
        Scan(
            "1h",
            ("CCC",),
            since=datetime(2019, 12, 22, tzinfo=UTC),
            before=datetime(2019, 12, 24, tzinfo=UTC),
        )
    ],
    "nothing": [],
}


@pytest.mark.parametrize("name", list(SCANS))
def test_a_scan_selects_exactly_its_rows(spark, rows, name):
    scans = SCANS[name]
    df = spark.createDataFrame(rows).filter(_spark_filter(scans))
    micros = df.select("symbol", "interval", F.unix_micros("ts").alias("us")).collect()
    by_spark = {(r.symbol, r.interval, EPOCH + timedelta(microseconds=r.us)) for r in micros}
    expected = {
        (s, i, t)
        for s, i, t in keys(rows)
        for scan in scans
        if i == scan.interval
        and s in scan.symbols
        and (scan.since is None or t >= scan.since)
        and (scan.before is None or t < scan.before)
    }
    assert by_spark == expected
    assert (len(expected) > 0) == (name != "nothing")
