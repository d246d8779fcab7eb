"""Recorded API answers in ``data_samples/recorded/``, for replaying Yahoo and Alpha Vantage.

Tests (unit and integration) replay these instead of the network: Alpha Vantage
bodies through ``responses`` (HTTP level), yfinance frames by standing in for
``yfinance.download``. A yfinance frame is stored as JSON that keeps what CSV and
``to_json`` lose: the column MultiIndex with its level names, the index's name
and time zone, and each column's dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockpipe.sources.samples import SAMPLES_DIR

RECORDED_DIR = SAMPLES_DIR / "recorded"
ALPHAVANTAGE_DIR = RECORDED_DIR / "alphavantage"
YFINANCE_DIR = RECORDED_DIR / "yfinance"


def alphavantage_body(name: str) -> dict[str, Any]:
    """A recorded Alpha Vantage JSON body, e.g. ``TIME_SERIES_DAILY_MSFT``."""
    return json.loads((ALPHAVANTAGE_DIR / f"{name}.json").read_text())


def yfinance_frame(name: str) -> pd.DataFrame:
    """A recorded ``yfinance.download`` answer, e.g. ``download_MSFT_1d``."""
    return frame_from_json(json.loads((YFINANCE_DIR / f"{name}.json").read_text()))


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def frame_to_json(frame: pd.DataFrame, **about: Any) -> dict[str, Any]:
    """A DataFrame with a DatetimeIndex as a JSON-able dict (see module doc)."""
    index = pd.DatetimeIndex(frame.index)
    cols = frame.columns
    return {
        **about,
        "index": {
            "name": index.name,
            "tz": str(index.tz) if index.tz is not None else None,
            "values": [ts.isoformat() for ts in index],
        },
        "columns": {
            "names": list(cols.names),
            "values": [list(c) if isinstance(c, tuple) else [c] for c in cols],
        },
        "dtypes": [str(t) for t in frame.dtypes],
        "data": [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)],
    }


def frame_from_json(obj: dict[str, Any]) -> pd.DataFrame:
    """Rebuild the frame :func:`frame_to_json` stored, dtypes and layout included."""
    idx_info, col_info = obj["index"], obj["columns"]
    if idx_info["tz"]:
        index = pd.DatetimeIndex(pd.to_datetime(idx_info["values"], utc=True)).tz_convert(
            idx_info["tz"]
        )
    else:
        index = pd.DatetimeIndex(pd.to_datetime(idx_info["values"]))
    index.name = idx_info["name"]
    names = col_info["names"]
    if len(names) > 1:
        columns: pd.Index = pd.MultiIndex.from_tuples(
            [tuple(c) for c in col_info["values"]], names=names
        )
    else:
        columns = pd.Index([c[0] for c in col_info["values"]], name=names[0])
    frame = pd.DataFrame(obj["data"], index=index, columns=columns, dtype="float64")
    for pos, dtype in enumerate(obj["dtypes"]):
        if dtype != "float64":
            frame.isetitem(pos, frame.iloc[:, pos].astype(dtype))
    return frame


def write_frame_json(frame: pd.DataFrame, path: Path, **about: Any) -> None:
    """Store ``frame``; fails if reading the file back would not give the same frame."""
    obj = frame_to_json(frame, **about)
    pd.testing.assert_frame_equal(frame_from_json(obj), frame, check_freq=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
