"""The synthetic source: OHLC consistency, calendar, reproducibility, conformity."""

from __future__ import annotations

import pandas as pd
import pytest

from stockpipe.config import Settings
from stockpipe.schemas import conform_bars
from stockpipe.sources import fetch_many, get_source
from stockpipe.sources.synthetic import synthetic_bars

OFFLINE = Settings(_env_file=None)


def _assert_consistent(bars: pd.DataFrame) -> None:
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["low"] > 0).all()
    assert (bars["volume"] > 0).all()
    assert bars[["open", "high", "low", "close", "volume"]].notna().all().all()


def test_daily_bars_are_consistent_and_on_business_days():
    bars = synthetic_bars(20, "2020-01-01", "2021-01-01", "1d", seed=7, batch_id="b")
    days = pd.bdate_range("2020-01-01", "2020-12-31", tz="UTC")
    assert len(bars) == 20 * len(days)
    _assert_consistent(bars)
    assert set(bars["ts"]) == set(days)  # weekdays only, 00:00 UTC
    assert bars.groupby("symbol").size().eq(len(days)).all()
    assert sorted(bars["symbol"].unique())[:2] == ["SYN0001", "SYN0002"]


def test_symbols_get_their_own_price_level_and_volatility():
    bars = synthetic_bars(30, "2020-01-01", "2022-01-01", "1d", seed=3)
    per = bars.groupby("symbol")["close"]
    vol = bars.assign(r=per.pct_change()).groupby("symbol")["r"].std()
    assert per.first().max() / per.first().min() > 5  # start prices spread over decades
    assert vol.max() / vol.min() > 1.5  # each its own volatility


@pytest.mark.parametrize(("interval", "per_day"), [("1h", 7), ("5m", 78), ("1m", 390)])
def test_intraday_fills_the_regular_session_in_utc(interval, per_day):
    bars = synthetic_bars(2, "2024-03-08", "2024-03-12", interval, seed=1)
    _assert_consistent(bars)
    one = bars[bars["symbol"] == "SYN0001"]
    assert len(one) == 2 * per_day  # Friday and Monday, not the weekend
    minutes = one["ts"].dt.hour * 60 + one["ts"].dt.minute
    assert minutes.min() == 14 * 60 + 30 and minutes.max() < 21 * 60
    assert set(one["ts"].dt.date.astype(str)) == {"2024-03-08", "2024-03-11"}


def test_same_seed_same_bars_other_seed_other_bars():
    a = synthetic_bars(
        5,
        "2021-01-01",
        "2021-07-01",
        "1d",
        seed=11,
        batch_id="b",
        ingested_at=pd.Timestamp("2024-01-01", tz="UTC"),
    )
    b = synthetic_bars(
        5,
        "2021-01-01",
        "2021-07-01",
        "1d",
        seed=11,
        batch_id="b",
        ingested_at=pd.Timestamp("2024-01-01", tz="UTC"),
    )
    c = synthetic_bars(
        5,
        "2021-01-01",
        "2021-07-01",
        "1d",
        seed=12,
        batch_id="b",
        ingested_at=pd.Timestamp("2024-01-01", tz="UTC"),
    )
    pd.testing.assert_frame_equal(a, b)
    assert not a["close"].equals(c["close"])


def test_a_symbol_does_not_depend_on_the_others_asked_for():
    many = synthetic_bars(8, "2021-01-01", "2021-03-01", "1d", seed=5)
    src = get_source("synthetic", OFFLINE, seed=5)
    one = src.fetch("SYN0004", start="2021-01-01", end="2021-03-01", batch_id="b")
    subset = many[many["symbol"] == "SYN0004"].reset_index(drop=True)
    cols = ["ts", "open", "high", "low", "close", "adj_close", "volume"]
    pd.testing.assert_frame_equal(one[cols], subset[cols])


def test_output_is_already_conformed():
    bars = synthetic_bars(3, "2022-01-03", "2022-02-01", "5m", seed=2)
    pd.testing.assert_frame_equal(conform_bars(bars), bars)
    assert set(bars["interval"]) == {"5m"} and set(bars["source"]) == {"synthetic"}


def test_fetch_many_with_no_symbols_uses_the_generated_names():
    src = get_source("synthetic", OFFLINE, n_symbols=3, seed=9)
    result = fetch_many(
        src, None, start="2023-01-02", end="2023-01-09", batch_id="b", progress=False
    )
    assert result.summary()["symbol"].tolist() == ["SYN0001", "SYN0002", "SYN0003"]
    assert result.summary()["bars"].tolist() == [5, 5, 5]
    assert result.bars["batch_id"].eq("b").all()


def test_named_symbols():
    src = get_source("synthetic", OFFLINE, symbols="acme, globex")
    assert src.available_symbols() == ["ACME", "GLOBEX"]
    bars = synthetic_bars(symbols=["acme"], start="2023-01-02", end="2023-01-04")
    assert bars["symbol"].unique().tolist() == ["ACME"] and len(bars) == 2
