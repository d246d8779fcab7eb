"""A producer run's report ends a bad run with the error that says what happened."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from stockpipe.errors import DeliveryError, NothingNewError, SourceError
from stockpipe.ingest import IngestReport
from stockpipe.kafka import DeliveryReport


def report(bars: dict[str, int], *, failed: int = 0, empty: bool = False, **errors: str):
    summary = pd.DataFrame(
        {
            "symbol": list(bars),
            "bars": list(bars.values()),
            "first": None,
            "last": None,
            "error": [errors.get(s) for s in bars],
            "note": None,
        }
    )
    sent = sum(bars.values()) - failed
    delivery = DeliveryReport(
        topic="t",
        sent=sent,
        failed=failed,
        failures=Counter({"broker down": failed} if failed else {}),
    )
    return IngestReport("b", "samples", "t", "1d", summary, delivery, 1.0, window_empty=empty)


def test_a_run_that_sent_everything_passes():
    report({"MSFT": 10, "GOOG": 0}, GOOG="samples: GOOG: not found").check()


def test_records_kafka_did_not_confirm_are_a_delivery_error():
    with pytest.raises(
        DeliveryError, match=r"3 of 10 records were not confirmed by Kafka: broker down \(3\)"
    ):
        report({"MSFT": 10}, failed=3).check(allow_empty=True)


def test_no_bar_at_all_fails_with_each_symbols_reason_unless_the_market_was_closed():
    with pytest.raises(SourceError, match=r"samples: A,B: no bars were fetched \(x; y\)"):
        report({"A": 0, "B": 0}, A="x", B="y").check()
    closed = report({"MSFT": 0}, empty=True)
    with pytest.raises(SourceError):
        closed.check()
    with pytest.raises(NothingNewError, match=r"no 1d bars for MSFT in \[2012-03-03, 2012-03-05\)"):
        closed.check(allow_empty=True, start="2012-03-03", end="2012-03-05")
