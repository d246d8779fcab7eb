"""The tick generator: seeded, on the tick grid, realistic sizes, disorder as asked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from oracles.tick_windows import parse_tick_values

from stockpipe.ticks import (
    IN_ORDER,
    LATE,
    OUT_OF_ORDER,
    TRADING_SECONDS_PER_YEAR,
    TickGenerator,
    TickSpec,
    round_to_tick,
)

BASE = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)


def _spec(**kw) -> TickSpec:
    args = dict(
        symbols=("AAPL", "MSFT", "ZZZQ"),
        seed=7,
        rate=200,
        start_ms=BASE,
        step_ms=20,
        producer_id="p-test",
    )
    args.update(kw)
    return TickSpec(**args)


def test_same_seed_gives_same_ticks_however_sliced():
    whole = TickGenerator(_spec()).take(10_000).to_frame()
    gen = TickGenerator(_spec())
    parts = [gen.take(n).to_frame() for n in (1, 999, 4096, 3000, 1904)]
    pd.testing.assert_frame_equal(whole, pd.concat(parts, ignore_index=True))
    other = TickGenerator(_spec(seed=8)).take(10_000).to_frame()
    assert not np.array_equal(whole["price"], other["price"])


def test_seq_increases_and_virtual_clock_sets_event_time():
    t = TickGenerator(_spec()).take(5000).to_frame()
    assert t["seq"].tolist() == list(range(5000))
    expected = BASE + np.floor(t["seq"].to_numpy() * 20.0).astype(np.int64)
    assert np.array_equal(t["ts"].to_numpy(), expected)  # no disorder asked
    assert set(t["kind"]) == {IN_ORDER}
    assert t["producer_id"].eq("p-test").all()


def test_prices_on_the_tick_grid_and_sizes_are_lots():
    t = TickGenerator(_spec()).take(20_000).to_frame()
    cents = t["price"] * 100
    assert np.allclose(cents, np.round(cents), atol=1e-6)
    assert (t["price"] > 0).all()
    assert (t["size"] > 0).all()
    odd, round_lots = t["size"] < 100, t["size"] % 100 == 0
    assert (odd | round_lots).all()
    assert 0.4 < odd.mean() < 0.7 and round_lots.mean() > 0.3
    below = round_to_tick(np.array([0.123456, 0.5, 0.00001, 1.234, 99.999]))
    assert np.allclose(below, [0.1235, 0.5, 0.0001, 1.23, 100.0])


def test_gbm_realised_volatility_matches_the_spec():
    spec = _spec(symbols=("AAPL",), volatility=2.0, rate=1.0)
    t = TickGenerator(spec).take(40_000).to_frame()
    dt = 1.0 / spec.rate / TRADING_SECONDS_PER_YEAR
    r = np.diff(np.log(t["price"].to_numpy()))
    realised = r.std(ddof=1) / np.sqrt(dt)
    assert realised == pytest.approx(2.0, rel=0.05)
    assert abs(r.mean()) < 3 * r.std() / np.sqrt(len(r))  # no drift beyond noise


def test_out_of_order_and_late_shares_and_bounds():
    spec = _spec(
        out_of_order_fraction=0.1, out_of_order_max_ms=4000, late_fraction=0.05, late_by_ms=60_000
    )
    t = TickGenerator(spec).take(40_000).to_frame()
    nominal = BASE + np.floor(t["seq"].to_numpy() * 20.0).astype(np.int64)
    ooo, late = t["kind"] == OUT_OF_ORDER, t["kind"] == LATE
    assert ooo.mean() == pytest.approx(0.1, abs=0.01)
    assert late.mean() == pytest.approx(0.05, abs=0.01)
    back = nominal - t["ts"].to_numpy()
    assert (back[ooo] >= 1).all() and (back[ooo] <= 4000).all()
    newest = np.maximum.accumulate(nominal)
    assert (newest[late] - t["ts"].to_numpy()[late] >= 60_000).all()
    assert (back[~(ooo | late)] == 0).all()


def test_live_event_time_comes_from_the_clock():
    gen = TickGenerator(_spec(start_ms=None, out_of_order_fraction=0.5))
    t = gen.take(100, now_ms=BASE + 5).to_frame()
    assert (t["ts"] <= BASE + 5).all() and (t.loc[t["kind"] == IN_ORDER, "ts"] == BASE + 5).all()
    with pytest.raises(ValueError):
        gen.take(1)


def test_messages_follow_the_contract_and_parse_back():
    batch = TickGenerator(_spec(out_of_order_fraction=0.2)).take(500)
    msgs = batch.messages()
    frame = batch.to_frame()
    assert [k.decode() for k, _ in msgs] == frame["symbol"].tolist()
    first = json.loads(msgs[0][1])
    assert set(first) == {"schema_version", "symbol", "ts", "price", "size", "seq", "producer_id"}
    back = parse_tick_values([v for _, v in msgs])
    cols = ["symbol", "ts", "price", "size", "seq", "producer_id"]
    pd.testing.assert_frame_equal(back[cols], frame[cols], check_dtype=False)


def test_parse_tick_values_is_strict_like_spark():
    good = '{"schema_version":1,"symbol":"A","ts":5,"price":1,"size":2,"seq":0,"producer_id":"p"}'
    bad = [
        "not json",
        "[1, 2]",
        good.replace('"ts":5', '"ts":"5"'),
        good.replace('"size":2', '"size":2.5'),
        good.replace(',"seq":0', ""),
    ]
    out = parse_tick_values([good, *bad, good.replace('"price":1', '"price":0')])
    assert out["price"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "kw",
    [
        dict(symbols=()),
        dict(rate=0),
        dict(out_of_order_fraction=1.5),
        dict(out_of_order_fraction=0.6, late_fraction=0.6),
        dict(out_of_order_max_ms=0),
    ],
)
def test_spec_rejects_nonsense(kw):
    with pytest.raises(ValueError):
        _spec(**kw)
