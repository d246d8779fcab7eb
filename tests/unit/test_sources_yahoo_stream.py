"""The yahoo live feed against a local server speaking the streamer's protocol (no Kafka).

Frames are encoded with yfinance's own PricingData schema. What the feed must make
of the recorded session is written in each line (``expect``) by the generator that
made the trades (data_samples/make_samples.py), not derived by the code under test.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections import Counter

import pytest
from yfinance.pricing_pb2 import PricingData

from stockpipe.config import Settings
from stockpipe.errors import FrameError, UnknownNameError
from stockpipe.live import FeedOptions, FeedStats, Rejected, Trade, get_feed, produce_ticks
from stockpipe.sources.streamer_replay import ReplayServer, read_session
from stockpipe.sources.yahoo_stream import TradeMapper, decode_frame

SESSION = "data_samples/recorded/yahoo_streamer/session.jsonl"
FAST = FeedOptions(heartbeat_s=0.3, idle_timeout_s=1.0, backoff_initial_s=0.05, poll_s=0.1)


def _frame(**fields) -> str:
    raw = PricingData(**fields).SerializeToString()
    return json.dumps({"type": "pricing", "message": base64.b64encode(raw).decode()})


def _msg(**fields) -> PricingData:
    return PricingData(**{"id": "MSFT", "price": 84.05, "time": 1_509_715_800_000, **fields})


def _settings(url: str) -> Settings:
    return Settings(_env_file=None, yahoo_stream_url=url)


def _collect(feed, stop: threading.Event) -> list:
    return list(feed.events(stop))


def test_decode_frame_reads_pricing_and_names_what_is_wrong():
    msg = decode_frame(_frame(id="MSFT", price=84.05, time=1_509_715_800_000, day_volume=10))
    assert (msg.id, msg.time, msg.day_volume) == ("MSFT", 1_509_715_800_000, 10)
    assert decode_frame('{"type": "heartbeat"}') is None
    cases = {
        "not json": "not JSON",
        "[1]": "not a JSON object",
        '{"type": "pricing"}': "without 'message'",
        '{"type": "pricing", "message": "%%%"}': "not base64",
        json.dumps({"type": "pricing", "message": base64.b64encode(b"\x0a\x09MS").decode()}): (
            "not a PricingData protobuf"
        ),
        _frame(price=1.0): "without a symbol",
    }
    for text, reason in cases.items():
        with pytest.raises(FrameError, match=reason):
            decode_frame(text)


def test_trade_sizes_from_last_size_or_day_volume_and_what_is_no_trade():
    stats = FeedStats()
    mapper = TradeMapper(frozenset({"MSFT"}), stats)
    t = 1_509_715_800_000
    assert mapper.map(_msg(day_volume=1000)) is None  # the baseline
    trade = mapper.map(_msg(time=t + 10, day_volume=1300, bid=84.04, ask=84.06, bid_size=5))
    assert trade == Trade("MSFT", t + 10, 84.05, 300, bid=84.04, ask=84.06, bid_size=5)
    assert mapper.map(_msg(time=t + 20, day_volume=1300, bid=84.03)) is None  # a quote
    assert mapper.map(_msg(time=t + 30, day_volume=1450, last_size=100)).size == 100
    assert mapper.map(_msg(time=t + 30, day_volume=1450, last_size=100)) is None  # again
    assert mapper.map(_msg(time=t + 40, day_volume=1500)).size == 50  # since 1450
    late = mapper.map(_msg(time=t + 5, day_volume=1100, last_size=7))
    assert (late.ts, late.size) == (t + 5, 7)  # older, with its own size
    assert mapper.map(_msg(time=t + 6, day_volume=1200)) is None  # older, no size
    assert mapper.map(_msg(time=t + 50, day_volume=20)) is None  # a new session
    assert mapper.map(_msg(time=t + 60, day_volume=45)).size == 25
    assert mapper.map(_msg(id="AAPL", day_volume=5, last_size=5)) is None
    assert (
        mapper.map(_msg(time=t + 70, price=84.12999725341797, price_hint=2, last_size=1)).price
        == 84.13
    )
    assert mapper.map(_msg(time=1_509_715_801, last_size=1)).ts == 1_509_715_801_000  # seconds
    assert sum(stats.skipped.values()) == 6
    assert {k.split(":")[0] for k in stats.skipped} == {
        "first message of the symbol",
        "quote update",
        "duplicate message",
        "older than the newest, without last_size",
        "day volume started again (a new session)",
        "a symbol not subscribed",
    }


def test_the_recorded_session_with_a_drop_gives_the_trades_it_holds():
    session = read_session(SESSION)
    with ReplayServer(session, speed=50) as server:
        feed = get_feed("yahoo", _settings(server.url), symbols=["MSFT", "GOOG"], options=FAST)
        stop = threading.Event()
        events: list = []

        def run() -> None:
            events.extend(feed.events(stop))

        worker = threading.Thread(target=run)
        worker.start()
        assert server.done.wait(60)
        threading.Timer(0.5, stop.set).start()
        worker.join(30)
    expected = [line["expect"] for line in session if "expect" in line]
    ticks = [e["tick"] for e in expected if "tick" in e]
    trades = [e for e in events if isinstance(e, Trade)]
    assert [(t.symbol, t.ts, t.price, t.size) for t in trades] == [
        (e["symbol"], e["ts"], e["price"], e["size"]) for e in ticks
    ]
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert len(rejected) == sum("rejected" in e for e in expected) == 3
    assert {r.frame for r in rejected} == {
        line["frame"] for line in session if "rejected" in line.get("expect", {})
    }
    kinds = Counter(e["skip"] for e in expected if "skip" in e)
    skipped = feed.stats.skipped
    assert sum(n for k, n in skipped.items() if k.startswith("first")) == kinds["first"] == 2
    assert skipped["duplicate message"] == kinds["duplicate"] == 1
    assert sum(n for k, n in skipped.items() if k.startswith("quote")) == kinds["quote"]
    # the drop: a second connection, subscribed again to both symbols
    assert feed.stats.connections == 2 and feed.stats.drops == 1
    assert [sorted(subs[0]) for subs in server.subscriptions] == [["GOOG", "MSFT"]] * 2


def test_a_silent_streamer_is_a_closed_market_the_feed_idles_and_heartbeats(caplog):
    caplog.set_level(logging.INFO, logger="stockpipe.live")
    with ReplayServer([]) as server:
        feed = get_feed("yahoo", _settings(server.url), symbols=["MSFT"], options=FAST)
        stop = threading.Event()
        threading.Timer(2.6, stop.set).start()
        assert _collect(feed, stop) == []
    assert feed.stats.idle_timeouts >= 2 and feed.stats.connections >= 2
    assert "the market is probably closed" in caplog.text
    assert max(len(subs) for subs in server.subscriptions) >= 3  # subscribe + heartbeats


def test_an_unreachable_streamer_is_retried_with_backoff_until_stopped(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    feed = get_feed("yahoo", _settings(f"ws://127.0.0.1:{port}/"), symbols=["MSFT"], options=FAST)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert _collect(feed, stop) == []
    assert feed.stats.connections == 0
    assert caplog.text.count("cannot reach") >= 3  # 0.05, 0.1, 0.2, 0.4 s apart


def test_unknown_feed_and_tick_source_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="live feed 'nosuch'; choose one of: finnhub, yahoo"):
        get_feed("nosuch", symbols=["MSFT"])
    with pytest.raises(UnknownNameError, match="choose one of: finnhub, synthetic, yahoo"):
        produce_ticks(Settings(_env_file=None), "nosuch", symbols="MSFT")
