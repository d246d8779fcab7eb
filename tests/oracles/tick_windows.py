"""Sliding-window aggregates of ticks computed with pandas alone, and ticks read back.

This is the independent answer the streaming job is checked against (tests and
the benchmark). It follows the same contract, written down here:

* A tick is valid when its symbol and producer are non-empty, its price finite
  and positive, its size positive (at most 1e9), its ts positive, its seq
  in [0, 2^40) and its schema_version 1; the others never reach a window. (The
  job also quarantines a tick far ahead of its Kafka timestamp; give this
  reference no such tick.)
* Windows are ``[start, start + window)`` with ``start`` a multiple of ``slide``
  (epoch-aligned); a tick belongs to every window that contains its ``ts``.
* The watermark in force for a tick is the largest ``ts`` of the valid ticks
  sent before it (``order``, by default ``seq``) minus the delay. A (tick,
  window) pair whose window ends at or before it is late and dropped. Spark only
  moves its watermark between micro-batches, so it may lag this one; data whose
  lateness is clear of that lag (as the tick producer makes it) is dropped the
  same way by both.
* A window is closed once the final watermark (the largest ``ts`` minus the
  delay) reaches its end; only closed windows are in the output.
* open/close: price of the first/last tick by ``(ts, seq)``; high, low; VWAP =
  sum(price * size) / sum(size); volume = sum(size); trade_count; price_std =
  sample standard deviation (NaN for one tick).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from stockpipe.schemas import (
    MAX_PRICE,
    MAX_SEQ,
    MAX_TICK_SIZE,
    SCHEMA_VERSION,
    SYMBOL_PATTERN,
    TICK_COLUMNS,
    TICK_WINDOWS_SCHEMA,
)
from stockpipe.times import to_ms

#: The columns of processed/tick_windows but its ``date`` partition.
WINDOW_COLUMNS: tuple[str, ...] = tuple(n for n in TICK_WINDOWS_SCHEMA.names if n != "date")


#: What a symbol may be: the contract's SYMBOL_PATTERN without its anchors (fullmatch).
SYMBOL = SYMBOL_PATTERN.removeprefix("^").removesuffix("$")


def valid(ticks: pd.DataFrame) -> pd.DataFrame:
    """Ticks that pass validation (as the contract above says)."""
    price = pd.to_numeric(ticks["price"], errors="coerce")
    size = pd.to_numeric(ticks["size"], errors="coerce")
    ts = pd.to_numeric(ticks["ts"], errors="coerce")
    ok = (
        ticks["symbol"].fillna("").astype(str).str.fullmatch(SYMBOL)
        & np.isfinite(price)
        & (price > 0)
        & (price <= MAX_PRICE)
        & (size > 0)
        & (size <= MAX_TICK_SIZE)
        & (ts > 0)
    )
    if "seq" in ticks:
        seq = pd.to_numeric(ticks["seq"], errors="coerce")
        ok &= (seq >= 0) & (seq <= MAX_SEQ)
    if "schema_version" in ticks:
        ok &= ticks["schema_version"] == SCHEMA_VERSION
    if "producer_id" in ticks:
        ok &= ticks["producer_id"].fillna("").astype(str).str.strip().ne("")
    return ticks.loc[ok]


def reference_windows(
    ticks: pd.DataFrame,
    *,
    window: str | int,
    slide: str | int,
    watermark: str | int,
    order: str | list[str] = "seq",
    final_watermark_ms: int | None = None,
    closed_only: bool = True,
) -> pd.DataFrame:
    """Closed windows of ``ticks`` (columns symbol, ts ms, price, size, seq).

    ``final_watermark_ms`` defaults to the largest valid ``ts`` minus the delay.
    With ``closed_only=False`` every window with a tick is returned (no watermark
    drop either): the batch answer.
    """
    w_ms, s_ms, delay = to_ms(window), to_ms(slide), to_ms(watermark)
    t = valid(ticks).sort_values(order, kind="stable").reset_index(drop=True)
    cols = list(WINDOW_COLUMNS)
    if t.empty:
        return _typed(pd.DataFrame(columns=cols))
    ts = t["ts"].to_numpy(np.int64)
    prior_max = np.maximum.accumulate(ts)
    # watermark in force when each tick arrives: from the ticks before it
    in_force = np.concatenate([[np.iinfo(np.int64).min], prior_max[:-1] - delay])
    n_over = -(-w_ms // s_ms)
    first = (ts // s_ms) * s_ms  # the latest window start at or before ts
    parts = []
    for k in range(n_over):
        start = first - k * s_ms
        inside = ts < start + w_ms
        keep = inside if not closed_only else inside & (start + w_ms > in_force)
        parts.append(t.loc[keep].assign(window_start_ms=start[keep]))
    pairs = pd.concat(parts, ignore_index=True)
    pairs["pv"] = pairs["price"] * pairs["size"]
    pairs = pairs.sort_values(["symbol", "window_start_ms", "ts", "seq"], kind="stable")
    g = pairs.groupby(["symbol", "window_start_ms"], sort=True)
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "vwap": g["pv"].sum() / g["size"].sum(),
            "volume": g["size"].sum().astype("int64"),
            "trade_count": g["price"].size().astype("int64"),
            "price_std": g["price"].std(ddof=1),
        }
    ).reset_index()
    out["window_end_ms"] = out["window_start_ms"] + w_ms
    if closed_only:
        final = final_watermark_ms if final_watermark_ms is not None else int(ts.max()) - delay
        out = out.loc[out["window_end_ms"] <= final]
    out["window_start"] = pd.to_datetime(out["window_start_ms"], unit="ms", utc=True)
    out["window_end"] = pd.to_datetime(out["window_end_ms"], unit="ms", utc=True)
    return _typed(out.loc[:, cols])


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ("window_start", "window_end"):
        df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
    for c in ("open", "high", "low", "close", "vwap", "price_std"):
        df[c] = df[c].astype("float64")
    for c in ("volume", "trade_count"):
        df[c] = df[c].astype("int64")
    df["symbol"] = df["symbol"].astype(object)
    return df.sort_values(["symbol", "window_start"]).reset_index(drop=True)


def late_pairs(
    ticks: pd.DataFrame,
    *,
    window: str | int,
    slide: str | int,
    watermark: str | int,
    order: str | list[str] = "seq",
) -> pd.DataFrame:
    """The (tick, window) pairs the watermark drops: symbol, window_start_ms, seq."""
    w_ms, s_ms, delay = to_ms(window), to_ms(slide), to_ms(watermark)
    t = valid(ticks).sort_values(order, kind="stable").reset_index(drop=True)
    if t.empty:
        return pd.DataFrame(columns=["symbol", "window_start_ms", "seq"])
    ts = t["ts"].to_numpy(np.int64)
    prior_max = np.maximum.accumulate(ts)
    in_force = np.concatenate([[np.iinfo(np.int64).min], prior_max[:-1] - delay])
    first = (ts // s_ms) * s_ms
    parts = []
    for k in range(-(-w_ms // s_ms)):
        start = first - k * s_ms
        late = (ts < start + w_ms) & (start + w_ms <= in_force)
        parts.append(
            pd.DataFrame(
                {"symbol": t["symbol"][late], "window_start_ms": start[late], "seq": t["seq"][late]}
            )
        )
    return pd.concat(parts, ignore_index=True)


def compare_windows(
    actual: pd.DataFrame, expected: pd.DataFrame, *, rtol: float = 1e-9
) -> list[str]:
    """Differences between two window frames (empty list: equal).

    Keys must match exactly (no duplicates, no gaps); numbers within ``rtol``
    (sums of floats depend on the order they are added in).
    """
    problems: list[str] = []
    key = ["symbol", "window_start"]
    a = _typed(actual.loc[:, list(WINDOW_COLUMNS)])
    e = _typed(expected.loc[:, list(WINDOW_COLUMNS)])
    dup = a[a.duplicated(key, keep=False)]
    if not dup.empty:
        problems.append(f"{len(dup)} duplicated window rows, e.g. {dup.head(3).to_dict('records')}")
    m = a.drop_duplicates(key).merge(e, on=key, how="outer", suffixes=("_a", "_e"), indicator=True)
    extra = m[m["_merge"] == "left_only"]
    missing = m[m["_merge"] == "right_only"]
    if not extra.empty:
        problems.append(
            f"{len(extra)} windows not expected, e.g. {extra[key].head(3).values.tolist()}"
        )
    if not missing.empty:
        problems.append(
            f"{len(missing)} windows missing, e.g. {missing[key].head(3).values.tolist()}"
        )
    both = m[m["_merge"] == "both"]
    for c in ("window_end", "volume", "trade_count"):
        bad = both[both[f"{c}_a"] != both[f"{c}_e"]]
        if not bad.empty:
            problems.append(
                f"{c} differs in {len(bad)} windows, e.g. {bad[key].head(3).values.tolist()}"
            )
    for c in ("open", "high", "low", "close", "vwap", "price_std"):
        x, y = both[f"{c}_a"].to_numpy(float), both[f"{c}_e"].to_numpy(float)
        same = np.isclose(x, y, rtol=rtol, atol=1e-12) | (np.isnan(x) & np.isnan(y))
        if not same.all():
            bad = both.loc[~same, [*key, f"{c}_a", f"{c}_e"]]
            problems.append(
                f"{c} differs in {len(bad)} windows, e.g. {bad.head(3).values.tolist()}"
            )
    return problems


def parse_tick_values(values: Sequence[bytes | str]) -> pd.DataFrame:
    """Tick messages (JSON values, as read back from Kafka) as a typed frame.

    The input of the reference windows, not validation (the streaming job does
    that). Like Spark's parser it is strict about JSON types: a value
    that is not an object, misses a field or has a wrong-typed one is left out;
    values such as a zero price are kept (the reference drops them).
    """
    ints = ("schema_version", "ts", "size", "seq")
    rows = []
    for v in values:
        try:
            d = json.loads(v)
        except ValueError:
            continue
        if not isinstance(d, dict):
            continue
        if not all(type(d.get(k)) is int for k in ints):
            continue
        if type(d.get("price")) not in (int, float) or not all(
            isinstance(d.get(k), str) for k in ("symbol", "producer_id")
        ):
            continue
        rows.append(
            (
                d["schema_version"],
                d["symbol"],
                d["ts"],
                float(d["price"]),
                d["size"],
                d["seq"],
                d["producer_id"],
            )
        )
    return pd.DataFrame(rows, columns=["schema_version", *TICK_COLUMNS])
