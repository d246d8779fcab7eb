"""A local websocket server speaking Yahoo's streamer protocol, replaying a recorded session.

Tests and the demo point the ``yahoo`` feed at it (``STOCKPIPE_YAHOO_STREAM_URL``)
instead of the internet. Like the streamer, it waits for ``{"subscribe": [...]}``,
then sends text frames ``{"type": "pricing", "message": <base64 PricingData>}``
of the symbols subscribed; a subscription sent again later (yfinance's heartbeat)
is recorded. A session is JSON lines (``data_samples/recorded/yahoo_streamer/``):

* ``{"frame": "<text>", "symbol": "MSFT", "after_ms": 250}``: wait, then send the
  frame as is (malformed frames too; ``symbol`` absent: sent whatever the
  subscription);
* ``{"drop": true}``: close the connection; the next connection carries on after it.

Other fields (``expect``) are for tests and ignored here. With ``rebase`` every
``time`` is moved so the session starts now and runs at the replay's ``speed``
(the demo's windows are then live).

Run it::

    python -m stockpipe.sources.streamer_replay --port 8765 --loop \\
        data_samples/recorded/yahoo_streamer/session.jsonl
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_session(path: Path | str) -> list[dict[str, Any]]:
    """The session's lines, in order."""
    with Path(path).open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def retime_frame(frame: str, origin_ms: int, start_ms: int, speed: float = 1.0) -> str:
    """A pricing frame whose ``time`` is moved from a session starting at ``origin_ms``
    to one starting at ``start_ms`` and played ``speed`` times as fast (others unchanged)."""
    from yfinance.pricing_pb2 import PricingData

    try:
        obj = json.loads(frame)
        msg = PricingData()
        msg.ParseFromString(base64.b64decode(obj["message"], validate=True))
    except Exception:  # a malformed frame is replayed as recorded
        return frame
    msg.time = start_ms + round((msg.time - origin_ms) / speed)
    obj["message"] = base64.b64encode(msg.SerializeToString()).decode()
    return json.dumps(obj)


def first_time_ms(session: list[dict[str, Any]]) -> int | None:
    from yfinance.pricing_pb2 import PricingData

    for line in session:
        if "frame" not in line or "symbol" not in line:
            continue
        msg = PricingData()
        msg.ParseFromString(base64.b64decode(json.loads(line["frame"])["message"]))
        return int(msg.time)
    return None


class ReplayServer:
    """Serves one session to the connections that come, in order, on 127.0.0.1."""

    def __init__(
        self,
        session: list[dict[str, Any]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        rebase: bool = False,
        loop: bool = False,
        resume: threading.Event | None = None,
    ) -> None:
        self.session = session
        #: Set: a connection after a drop waits for it before sending (a test's pause).
        self.resume = resume
        #: Set once a drop line was served.
        self.dropped = threading.Event()
        self.speed = speed
        self.rebase = rebase
        self.loop = loop
        self._cursor = 0
        self._lock = threading.Lock()
        self._origin: int | None = None  # rebase: the session's first time ...
        self._start = 0  # ... played from this one (epoch ms)
        #: Every subscription received, per connection (in order of connection).
        self.subscriptions: list[list[list[str]]] = []
        #: Set once the last line of the session was served (never with ``loop``).
        self.done = threading.Event()
        from websockets.sync.server import serve

        self._server = serve(self._handle, host, port, compression=None)
        self.host, self.port = self._server.socket.getsockname()[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_lines(self) -> Iterator[dict[str, Any]]:
        while True:
            with self._lock:
                if self._cursor >= len(self.session):
                    if not self.loop:
                        self.done.set()
                        return
                    self._cursor = 0
                if self._cursor == 0 and self.rebase:
                    self._origin = first_time_ms(self.session)
                    self._start = int(time.time() * 1000)
                line = self.session[self._cursor]
                self._cursor += 1
            yield line

    def _handle(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        subs: list[list[str]] = []
        self.subscriptions.append(subs)
        wanted: set[str] = set()
        try:
            first = json.loads(conn.recv(timeout=30))
        except (TimeoutError, ConnectionClosed, ValueError):
            return
        subs.append(list(first.get("subscribe", [])))
        wanted.update(s.upper() for s in subs[-1])

        def listen() -> None:  # later subscriptions: yfinance's heartbeat
            try:
                for text in conn:
                    message = json.loads(text)
                    subs.append(list(message.get("subscribe", [])))
                    wanted.update(s.upper() for s in subs[-1])
            except (ConnectionClosed, ValueError):
                return

        # read from the start: unread messages past websockets' queue would stop it
        # reading the socket, pings included, and the connection would time out
        threading.Thread(target=listen, daemon=True).start()
        if self.dropped.is_set() and self.resume is not None:
            self.resume.wait()
            if conn.state.name != "OPEN":
                return  # the client gave up meanwhile: leave the session's lines to the next
        try:
            for line in self._next_lines():
                if line.get("drop"):
                    conn.close()
                    self.dropped.set()
                    return
                if "frame" not in line:
                    continue
                delay = line.get("after_ms", 0) / 1000 / self.speed
                if delay > 0:
                    time.sleep(delay)
                symbol = line.get("symbol")
                if symbol is not None and symbol.upper() not in wanted:
                    continue
                frame = line["frame"]
                if self._origin is not None:
                    frame = retime_frame(frame, self._origin, self._start, self.speed)
                conn.send(frame)
            # the session is over: stay open and silent, as a closed market is
            while conn.state.name != "CLOSED":
                time.sleep(0.2)
        except ConnectionClosed:
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stockpipe.sources.streamer_replay", description=__doc__.split("\n")[0]
    )
    p.add_argument("session", type=Path, help="a session file (JSON lines)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--speed", type=float, default=1.0, help="2: twice as fast as recorded")
    p.add_argument("--loop", action="store_true", help="start the session again at its end")
    p.add_argument(
        "--keep-times", action="store_true", help="send the recorded times (default: now)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = ReplayServer(
        read_session(args.session),
        port=args.port,
        speed=args.speed,
        rebase=not args.keep_times,
        loop=args.loop,
    )
    print(f"replaying {args.session} on {server.url} (Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
