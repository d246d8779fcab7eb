"""The alphavantage source, with HTTP replayed by ``responses`` from recorded bodies.

The real ``alpha_vantage`` package builds the URL and runs its decorators; only
the HTTP answer is recorded.
"""

from __future__ import annotations

import copy
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import requests
import responses
from oracles.recorded import alphavantage_body
from responses import matchers

from stockpipe.config import Settings
from stockpipe.errors import ConfigError, RateLimitError, SourceError
from stockpipe.sources import fetch_many, get_source
from stockpipe.sources.base import RetryPolicy

URL = "https://www.alphavantage.co/query"
KEY = "test-key-123"
UTC = ZoneInfo("UTC")
FIELDS = {"open": "1. open", "high": "2. high", "low": "3. low", "close": "4. close"}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _settings(key: str | None = KEY) -> Settings:
    return Settings(_env_file=None, alphavantage_api_key=key)


def _source(attempts: int = 3, sleeps: Sleeps | None = None):
    sleep = sleeps if sleeps is not None else Sleeps()
    retry = RetryPolicy(attempts=attempts, wait_initial=1.0, wait_max=4.0, sleep=sleep)
    return get_source("alphavantage", _settings(), retry=retry)


def _answer(rsps, body, **params) -> None:
    rsps.get(URL, json=body, match=[matchers.query_param_matcher(params, strict_match=False)])


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


def test_daily_body_is_normalized_value_by_value(rsps):
    body = alphavantage_body("TIME_SERIES_DAILY_MSFT")
    _answer(rsps, body, function="TIME_SERIES_DAILY", symbol="MSFT", apikey=KEY)
    bars = _source().fetch("msft", batch_id="b")
    series = body["Time Series (Daily)"]
    assert len(bars) == len(series) == 100
    for bar in bars.itertuples(index=False):
        row = series[bar.ts.strftime("%Y-%m-%d")]
        assert bar.ts == bar.ts.normalize()  # trading date at 00:00 UTC
        for ours, theirs in FIELDS.items():
            assert getattr(bar, ours) == float(row[theirs])
        assert bar.volume == int(row["5. volume"])
        assert math.isnan(bar.adj_close)  # TIME_SERIES_DAILY has no adjusted close
    assert bars["ts"].is_monotonic_increasing  # the body lists newest first
    assert set(bars["symbol"]) == {"MSFT"} and set(bars["source"]) == {"alphavantage"}


def test_intraday_us_eastern_becomes_utc_across_dst(rsps):
    body = alphavantage_body("TIME_SERIES_INTRADAY_5min_MSFT")
    assert body["Meta Data"]["6. Time Zone"] == "US/Eastern"
    _answer(rsps, body, function="TIME_SERIES_INTRADAY", interval="5min", month="2017-11")
    bars = _source().fetch(
        "MSFT", start="2017-11-03", end="2017-11-07", interval="5m", batch_id="b"
    )
    series = body["Time Series (5min)"]
    eastern = ZoneInfo("US/Eastern")
    expected = {
        datetime.fromisoformat(k).replace(tzinfo=eastern).astimezone(UTC): v
        for k, v in series.items()
    }
    assert len(bars) == len(expected) == 156
    for bar in bars.itertuples(index=False):
        row = expected[bar.ts.to_pydatetime()]
        assert bar.close == float(row["4. close"]) and bar.volume == int(row["5. volume"])
    first = bars.groupby(bars["ts"].dt.date)["ts"].min()
    # 09:30 New York: 13:30 UTC on Friday 2017-11-03 (EDT), 14:30 UTC on Monday 11-06 (EST).
    assert [t.isoformat() for t in first] == [
        "2017-11-03T13:30:00+00:00",
        "2017-11-06T14:30:00+00:00",
    ]


def test_intraday_reads_the_time_zone_the_answer_names(rsps):
    body = copy.deepcopy(alphavantage_body("TIME_SERIES_INTRADAY_5min_MSFT"))
    body["Meta Data"]["6. Time Zone"] = "UTC"
    _answer(rsps, body, function="TIME_SERIES_INTRADAY")
    bars = _source().fetch(
        "MSFT", start="2017-11-03", end="2017-11-07", interval="5m", batch_id="b"
    )
    assert bars["ts"].min() == pd.Timestamp("2017-11-03 09:30", tz="UTC")


def test_bad_values_pass_through(rsps):
    body = copy.deepcopy(alphavantage_body("TIME_SERIES_DAILY_MSFT"))
    series = body["Time Series (Daily)"]
    series["2017-11-09"]["4. close"] = "None"  # not a number
    series["2017-11-08"]["5. volume"] = "-5"
    _answer(rsps, body, function="TIME_SERIES_DAILY")
    bars = _source().fetch("MSFT", batch_id="b").set_index("ts")
    assert len(bars) == 100
    assert math.isnan(bars.loc[pd.Timestamp("2017-11-09", tz="UTC"), "close"])
    assert bars.loc[pd.Timestamp("2017-11-09", tz="UTC"), "open"] == float(
        series["2017-11-09"]["1. open"]
    )
    assert bars.loc[pd.Timestamp("2017-11-08", tz="UTC"), "volume"] == -5


@pytest.mark.parametrize("name", ["rate_limit_information", "rate_limit_note"])
def test_rate_limit_is_retried_then_reported(rsps, name):
    _answer(rsps, alphavantage_body(name), function="TIME_SERIES_DAILY")
    sleeps = Sleeps()
    with pytest.raises(RateLimitError, match="still rate limited after 3 attempts") as info:
        _source(attempts=3, sleeps=sleeps).fetch("MSFT", batch_id="b")
    assert info.value.symbol == "MSFT"
    assert "Thank you for using Alpha Vantage" in info.value.reason
    assert len(rsps.calls) == 3 and sleeps == [1.0, 2.0]


def test_rate_limit_then_success(rsps):
    body = alphavantage_body("TIME_SERIES_DAILY_MSFT")
    # responses answers registrations for the same URL in order.
    _answer(rsps, alphavantage_body("rate_limit_note"), function="TIME_SERIES_DAILY")
    _answer(rsps, body, function="TIME_SERIES_DAILY")
    bars = _source().fetch("MSFT", batch_id="b")
    assert len(bars) == 100 and len(rsps.calls) == 2
    assert bars["close"].iloc[-1] == float(body["Time Series (Daily)"]["2017-11-10"]["4. close"])


def test_error_message_is_a_source_error_naming_the_symbol(rsps):
    _answer(rsps, alphavantage_body("error_message"), symbol="NOSUCH")
    with pytest.raises(SourceError, match=r"^alphavantage: NOSUCH: Invalid API call") as info:
        _source().fetch("NOSUCH", batch_id="b")
    assert not isinstance(info.value, RateLimitError)
    assert len(rsps.calls) == 1  # not retried


def test_information_that_is_not_a_rate_limit_is_not_retried(rsps):
    _answer(rsps, alphavantage_body("premium_information"))
    with pytest.raises(SourceError, match="premium endpoint") as info:
        _source().fetch("MSFT", batch_id="b")
    assert not isinstance(info.value, RateLimitError) and len(rsps.calls) == 1


def test_http_error_and_non_json(rsps):
    rsps.get(URL, body="<html>bad gateway</html>", status=502)
    rsps.get(URL, body="not json", status=200)
    with pytest.raises(SourceError, match="HTTP 502"):
        _source().fetch("MSFT", batch_id="b")
    with pytest.raises(SourceError, match="answer is not JSON"):
        _source().fetch("MSFT", batch_id="b")


def test_network_failure_never_leaks_the_key(rsps):
    rsps.get(URL, body=requests.ConnectionError(f"cannot reach {URL}?apikey={KEY}"))
    with pytest.raises(SourceError, match="request failed") as info:
        _source().fetch("MSFT", batch_id="b")
    assert KEY not in str(info.value) and "apikey=***" in str(info.value)


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    monkeypatch.delenv("STOCKPIPE_ALPHAVANTAGE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ALPHAVANTAGE_API_KEY") as info:
        get_source("alphavantage", _settings(None))
    assert info.value.variable == "ALPHAVANTAGE_API_KEY"


def test_key_is_read_from_the_environment(monkeypatch, rsps):
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "from-env")
    _answer(rsps, alphavantage_body("TIME_SERIES_DAILY_MSFT"), apikey="from-env")
    src = get_source("alphavantage", Settings(_env_file=None))
    assert len(src.fetch("MSFT", batch_id="b")) == 100


def test_fetch_many_reports_the_failing_symbol_and_keeps_the_others(rsps):
    _answer(rsps, alphavantage_body("TIME_SERIES_DAILY_MSFT"), symbol="MSFT")
    _answer(rsps, alphavantage_body("error_message"), symbol="NOSUCH")
    result = fetch_many(_source(), ["NOSUCH", "MSFT"], batch_id="b", progress=False)
    summary = result.summary().set_index("symbol")
    assert list(summary.index) == ["NOSUCH", "MSFT"]
    assert summary.loc["MSFT", "bars"] == 100 and summary.loc["MSFT", "error"] is None
    assert "Invalid API call" in summary.loc["NOSUCH", "error"]
    assert set(result.bars["symbol"]) == {"MSFT"}
