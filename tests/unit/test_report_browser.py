"""The HTML report in a real browser: headless Chromium, offline, driven over DevTools.

Chromium is driven through ``--remote-debugging-pipe`` (DevTools protocol as
NUL-separated JSON on file descriptors 3 and 4), so the test needs only the stdlib:
no websocket client, no debugging port. DNS and proxy are pointed at nothing, so
any attempt to reach the network fails and is recorded.

With ``STOCKPIPE_SAVE_SCREENSHOT=1`` one more test renders the market report of the
shipped samples and saves it as ``docs/report.png``, the README's picture; a plain
run skips it and leaves the checkout as it was.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import signal
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from oracles.tick_windows import reference_windows
from test_charts import QUARANTINE, make_bars, make_metrics, make_windows

from stockpipe import reporting
from stockpipe.charts import (
    build_report,
    candlestick_figure,
    correlation_figure,
    performance_figure,
    quarantine_figure,
    returns_figure,
    stream_metrics_figure,
    stream_windows_figure,
    symbol_colors,
    volatility_figure,
)
from stockpipe.charts.figures import DOWN_COLOR, UP_COLOR
from stockpipe.config import PROJECT_ROOT
from stockpipe.demo import DEMO_SYMBOLS, STREAM_SYMBOLS
from stockpipe.sources.samples import SamplesSource
from stockpipe.ticks import TickGenerator, TickSpec

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless browser check needs Debian's chromium: apt-get install -y chromium",
)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-pipe",
    # offline: no name resolves and every proxied request goes nowhere
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
)

#: Per plot: rendered SVG, trace count plotly.js accepted, title and annotations drawn.
PROBE_JS = """(() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
  id: p.id,
  svg: !!p.querySelector('svg.main-svg'),
  traces: p._fullData ? p._fullData.length : -1,
  drawn: p.querySelectorAll('g.trace, g.hm image').length,
  title: (p.querySelector('.gtitle') || {}).textContent || '',
  notes: [...p.querySelectorAll('.annotation-text')].map(a => a.textContent),
})))()"""


class Browser:
    """A headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path, log: Path) -> None:
        cmd_r, self._cmd_w = _high_pipe()
        self._res_r, res_w = _high_pipe()

        def wire() -> None:  # in the child: DevTools reads fd 3, writes fd 4
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            close_fds=False,  # fds 3 and 4 must survive; all others are close-on-exec
            preexec_fn=wire,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(res_w)
        self.events: list[dict[str, Any]] = []
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._res_r, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                self._inbox.put(json.loads(raw))
        self._inbox.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            msg = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("Chromium did not answer in time") from None
        if msg is None:
            raise RuntimeError("Chromium closed the DevTools pipe")
        return msg

    def call(self, method: str, timeout: float = 20, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and wait for its answer."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if hasattr(self, "session"):
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]

    def wait_event(self, method: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if e.get("method") == method]
            if found:
                return found[0]
            self.events.append(self._next(deadline))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(details.get("exception", {}).get("description") or details["text"])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(params["entry"]["text"])
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session, started above
            self.proc.wait(timeout=10)
        finally:
            os.close(self._cmd_w)
            self._log.close()


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends sit above fd 9, so dup2 onto 3 and 4 cannot clobber them."""
    r, w = os.pipe()
    ends = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (r, w))
    os.close(r)
    os.close(w)
    return ends


def decode_png(data: bytes) -> tuple[int, int, list[bytearray], int]:
    """Width, height, unfiltered rows and bytes per pixel of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    return width, height, rows, bpp


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _report_figures() -> list:
    bars = make_bars()
    colors = symbol_colors(["AAPL", "MSFT", "NVDA"])
    return [
        candlestick_figure(bars, "AAPL", colors=colors),
        performance_figure(bars, colors=colors),
        volatility_figure(bars, colors=colors),
        returns_figure(bars, colors=colors),
        returns_figure(bars, kind="histogram", colors=colors),
        correlation_figure(bars),
        stream_windows_figure(make_windows(), colors=colors),
        stream_metrics_figure(make_metrics()),
        quarantine_figure(QUARANTINE),
        candlestick_figure(bars, "TSLA", start="2024-01-01", end="2024-02-01"),  # empty state
        performance_figure(make_bars(symbols=("AAPL",), n=1)),  # one row
    ]


@pytest.mark.timeout(90)
def test_report_renders_every_chart_offline_without_errors(tmp_path):
    figs = _report_figures()
    sections = [("Prices", figs[:2]), ("Risk", figs[2:6]), ("Streaming", figs[6:8])]
    sections += [("Data quality", figs[8]), ("Edge cases", figs[9:])]
    page = tmp_path / "report.html"
    page.write_text(build_report(sections, "Browser check", "offline"), encoding="utf-8")

    browser = Browser(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=3000,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", url=page.as_uri())
        browser.wait_event("Page.loadEventFired", timeout=30)
        deadline = time.monotonic() + 15
        while True:  # Plotly.newPlot resolves asynchronously
            plots = browser.evaluate(PROBE_JS)
            if all(p["svg"] and p["traces"] >= 0 for p in plots) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        shot = browser.call(
            "Page.captureScreenshot",
            format="png",
            clip={"x": 0, "y": 0, "width": 1400, "height": 3000, "scale": 0.3},
        )
        # the error capture itself works: an uncaught error thrown now is seen
        browser.evaluate("setTimeout(() => { throw new Error('canary-7'); }, 0); 1")
        browser.wait_event("Runtime.exceptionThrown", timeout=10)
        errors = browser.errors()
        requests = browser.requests()
    finally:
        browser.close()

    assert len(errors) == 1 and "canary-7" in errors[0], errors  # nothing but the canary
    assert requests and requests[0] == page.as_uri()
    external = [u for u in requests if not u.startswith(("file://", "data:", "blob:"))]
    assert external == [], f"the report asked the network for {external}"

    assert [p["id"] for p in plots] == [f"figure-{i}" for i in range(1, len(figs) + 1)]
    for plot, fig in zip(plots, figs, strict=True):
        assert plot["svg"], plot
        assert plot["traces"] == len(fig.data), plot
        assert plot["title"].startswith(fig.layout.title.text), plot
        if fig.data:
            assert plot["drawn"] > 0, plot  # trace layers exist in the SVG
        else:
            assert plot["notes"] == [fig.layout.annotations[0].text], plot

    width, height, rows, bpp = decode_png(base64.b64decode(shot["data"]))
    assert (width, height) == (420, 900)
    colours, chromatic = set(), 0
    for row in rows:
        for x in range(0, width * bpp, bpp):
            r, g, b = row[x], row[x + 1], row[x + 2]
            colours.add((r, g, b))
            chromatic += max(r, g, b) - min(r, g, b) > 60
    assert len(colours) > 200, "the screenshot is (nearly) blank"
    assert chromatic > 0.01 * width * height, "no coloured chart pixels in the screenshot"
    for name, target in (("up candle", UP_COLOR), ("down candle", DOWN_COLOR)):
        want = _rgb(target)
        assert any(
            all(abs(c - w) <= 24 for c, w in zip(colour, want, strict=True)) for colour in colours
        ), f"no {name} colour {target} in the screenshot"


#: The README's picture of the report; written only when this variable is 1.
SCREENSHOT = PROJECT_ROOT / "docs" / "report.png"
SAVE_SCREENSHOT = os.environ.get("STOCKPIPE_SAVE_SCREENSHOT") == "1"


def _sample_bars() -> pd.DataFrame:
    """The shipped daily samples with the processed zone's derived columns (pandas)."""
    source = SamplesSource()
    frames = [source.fetch(s, batch_id="screenshot") for s in DEMO_SYMBOLS.split(",")]
    df = pd.concat(frames, ignore_index=True).sort_values(["symbol", "ts"], ignore_index=True)
    price = df["adj_close"].fillna(df["close"])
    by = price.groupby(df["symbol"])
    df["return"] = price / by.shift(1) - 1
    df["log_return"] = np.log(price / by.shift(1))
    df["sma_20"] = by.transform(lambda s: s.rolling(20).mean())
    df["sma_50"] = by.transform(lambda s: s.rolling(50).mean())
    df["volatility_20"] = df.groupby("symbol")["log_return"].transform(
        lambda s: s.rolling(20).std()
    )
    df["range_pct"] = (df["high"] - df["low"]) / df["close"] * 100
    df["year"] = df["ts"].dt.year
    return df


def _sample_windows() -> pd.DataFrame:
    """Ten minutes of the demo's synthetic ticks in the streaming job's windows."""
    spec = TickSpec(symbols=tuple(STREAM_SYMBOLS.split(",")), rate=200.0, start_ms=0, seed=3)
    ticks = TickGenerator(spec).take(120_000).to_frame()
    ticks["ts"] += int(pd.Timestamp("2026-12-01 14:30", tz="UTC").timestamp() * 1000)
    return reference_windows(ticks, window="1 minute", slide="15 seconds", watermark="30 seconds")


@pytest.mark.skipif(not SAVE_SCREENSHOT, reason="set STOCKPIPE_SAVE_SCREENSHOT=1 to save it")
@pytest.mark.timeout(120)
def test_save_a_screenshot_of_the_report_for_the_readme(tmp_path, monkeypatch):
    """The report `make demo` writes, on the shipped samples, as docs/report.png."""
    quarantine = pd.DataFrame(
        {
            "reason": ["high_below_range", "unparsable_json", "future_ts; bad_symbol"] * 2,
            "source": ["csv", None, "yahoo"] * 2,
            "topic": ["stock.bars", "stock.ticks", "stock.bars"] * 2,
            "quarantined_at": pd.Timestamp("2026-12-01", tz="UTC"),
        }
    )
    monkeypatch.setattr(reporting, "read_bars", lambda *a, **k: _sample_bars())
    monkeypatch.setattr(reporting, "read_tick_windows", lambda *a, **k: _sample_windows())
    monkeypatch.setattr(reporting, "read_stream_metrics", lambda *a, **k: make_metrics(30))
    monkeypatch.setattr(reporting, "_quarantine_all", lambda *a, **k: quarantine)
    report = reporting.market_report(None, DEMO_SYMBOLS)  # type: ignore[arg-type]
    page = tmp_path / "report.html"
    page.write_text(report.html, encoding="utf-8")

    width, scale = 1280, 0.6
    browser = Browser(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=3000,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Emulation.setScrollbarsHidden", hidden=True)
        browser.call("Page.enable")
        browser.call("Page.navigate", url=page.as_uri())
        browser.wait_event("Page.loadEventFired", timeout=30)
        deadline = time.monotonic() + 15
        while not all(p["svg"] for p in browser.evaluate(PROBE_JS)):
            assert time.monotonic() < deadline, "the report's plots did not render"
            time.sleep(0.2)
        time.sleep(1)  # transitions settle
        # the heading, the contents and the two candlestick charts
        height = browser.evaluate(
            "document.getElementById('figure-2-box').getBoundingClientRect().bottom"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}
        shot = base64.b64decode(
            browser.call("Page.captureScreenshot", format="png", clip=clip)["data"]
        )
    finally:
        browser.close()

    assert decode_png(shot)[0] == int(width * scale)
    assert len(shot) < 400_000, f"{len(shot):,} bytes: too large for the README"
    SCREENSHOT.write_bytes(shot)
