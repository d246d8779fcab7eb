"""The finnhub live feed against a local server speaking Finnhub's trades protocol (no Kafka)."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from pydantic import SecretStr
from websockets.sync.server import serve

from stockpipe.config import Settings
from stockpipe.errors import ConfigError, SecretParameterError
from stockpipe.live import FeedOptions, Rejected, Trade, get_feed
from stockpipe.notebooks import check_no_secrets

KEY = "unit-finnhub-key-9Zq3"
FAST = FeedOptions(idle_timeout_s=5, backoff_initial_s=0.05, poll_s=0.1)
T = 1_672_348_887_195


class FakeFinnhub:
    """Checks the token, records subscriptions, sends one message list per connection."""

    def __init__(self, sessions: list[list[str]]) -> None:
        self.sessions = sessions
        self.paths: list[str] = []
        self.subscribed: list[list[str]] = []
        self.served = threading.Event()
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handle(self, conn) -> None:
        self.paths.append(conn.request.path)
        subs = [json.loads(conn.recv(timeout=5))["symbol"] for _ in range(2)]
        self.subscribed.append(subs)
        if not self.sessions:
            self.served.set()
            conn.recv()  # silent until the client goes
            return
        for text in self.sessions.pop(0):
            conn.send(text)
        conn.close()  # a drop after each session

    def stop(self) -> None:
        self._server.shutdown()


def _trades(*items: dict) -> str:
    return json.dumps({"type": "trade", "data": list(items)})


def _settings(url: str) -> Settings:
    return Settings(_env_file=None, finnhub_api_key=SecretStr(KEY), finnhub_stream_url=url)


def test_finnhub_trades_become_ticks_across_a_drop_and_the_key_stays_out_of_logs(caplog):
    caplog.set_level(logging.INFO)
    first = [
        _trades(
            {"s": "AAPL", "p": 129.58, "t": T, "v": 100, "c": ["1", "12"]},
            {"s": "MSFT", "p": 240.1, "t": T + 5, "v": 3},
            {"s": "AAPL", "p": 129.6, "t": T + 7, "v": 0.5},  # a fraction: not a tick
        ),
        json.dumps({"type": "ping"}),
        "{not json",
    ]
    second = [_trades({"s": "AAPL", "p": 129.61, "t": T + 9, "v": 200})]
    server = FakeFinnhub([first, second])
    try:
        feed = get_feed("finnhub", _settings(server.url), symbols=["aapl", "msft"], options=FAST)
        stop = threading.Event()
        events: list = []
        worker = threading.Thread(target=lambda: events.extend(feed.events(stop)))
        worker.start()
        assert server.served.wait(20)
        stop.set()
        worker.join(10)
    finally:
        server.stop()
    assert [e for e in events if isinstance(e, Trade)] == [
        Trade("AAPL", T, 129.58, 100),
        Trade("MSFT", T + 5, 240.1, 3),
        Trade("AAPL", T + 9, 129.61, 200),
    ]
    assert [e.frame for e in events if isinstance(e, Rejected)] == ["{not json"]
    assert feed.stats.skipped["ping"] == 1
    assert sum(n for k, n in feed.stats.skipped.items() if k.startswith("a trade size")) == 1
    assert feed.stats.connections == 3 and feed.stats.drops == 2
    assert server.subscribed == [["AAPL", "MSFT"]] * 3
    assert all(path == f"/?token={KEY}" for path in server.paths)
    assert KEY not in caplog.text and "connected to" in caplog.text


def test_the_finnhub_feed_needs_its_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="Set FINNHUB_API_KEY in the environment"):
        get_feed("finnhub", Settings(_env_file=None), symbols=["AAPL"])
    monkeypatch.setenv("FINNHUB_API_KEY", KEY)
    settings = Settings(_env_file=None)
    assert settings.finnhub_api_key.get_secret_value() == KEY
    assert settings.to_env()["FINNHUB_API_KEY"] == KEY  # handed to child processes as is
    with pytest.raises(SecretParameterError):
        check_no_secrets({"symbols": f"AAPL&token={KEY}"}, settings)
