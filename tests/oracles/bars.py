"""The processed zone of bars computed with pandas alone, and a comparison of bar frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stockpipe.schemas import BAR_COLUMNS, BAR_KEY, DERIVED_COLUMNS

#: What two processed-bar frames must agree on: the bar's values and derived columns.
COMPARED_COLUMNS: tuple[str, ...] = (
    *(c for c in BAR_COLUMNS if c not in ("source", "ingested_at", "batch_id")),
    *DERIVED_COLUMNS,
)


def expected_processed(bars: pd.DataFrame) -> pd.DataFrame:
    """The processed zone computed independently with pandas."""
    df = bars.sort_values("ingested_at", kind="stable")
    df = df.drop_duplicates(list(BAR_KEY), keep="last")
    df = df.sort_values(list(BAR_KEY)).reset_index(drop=True)
    price = df["adj_close"].fillna(df["close"])
    g = price.groupby([df["symbol"], df["interval"]])
    prev = g.shift(1)
    df["return"] = price / prev - 1
    df["log_return"] = np.log(price / prev)
    df["sma_20"] = g.transform(lambda s: s.rolling(20).mean())
    df["sma_50"] = g.transform(lambda s: s.rolling(50).mean())
    df["volatility_20"] = df.groupby(["symbol", "interval"])["log_return"].transform(
        lambda s: s.rolling(20).std()
    )
    df["range_pct"] = (df["high"] - df["low"]) / df["close"] * 100
    return df


def assert_same_bars(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Fail unless the frames hold the same bars (COMPARED_COLUMNS, floats within 1e-9)."""
    cols = list(COMPARED_COLUMNS)
    a = actual.loc[:, cols].sort_values(["symbol", "ts"]).reset_index(drop=True)
    e = expected.loc[:, cols].sort_values(["symbol", "ts"]).reset_index(drop=True)
    a["volume"] = a["volume"].astype("int64")
    e["volume"] = e["volume"].astype("int64")
    a["ts"] = pd.to_datetime(a["ts"], utc=True).astype("datetime64[us, UTC]")
    e["ts"] = pd.to_datetime(e["ts"], utc=True).astype("datetime64[us, UTC]")
    pd.testing.assert_frame_equal(a, e, check_exact=False, rtol=1e-9, atol=1e-12)
