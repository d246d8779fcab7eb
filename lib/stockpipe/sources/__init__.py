"""Data sources of the batch ingestion, looked up by name, and a many-symbol fetch.

>>> src = get_source("samples")                      # real data shipped in data_samples/
>>> res = fetch_many(src, "MSFT,GOOG", start="2013-01-01", end="2013-02-01", batch_id="b1")
>>> res.bars            # conformed bars of every symbol that worked
>>> res.summary()       # one row per symbol: bars, first, last, error

Sources are imported on first use, so looking up ``samples`` never imports yfinance.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm import tqdm  # plain text bar: works in papermill runs without ipywidgets

from stockpipe.config import SourceSettings
from stockpipe.errors import (
    EmptyWindowError,
    ParameterError,
    SetupError,
    SourceError,
    UnknownNameError,
)
from stockpipe.schemas import empty_bars
from stockpipe.sources.base import Bound, Source, check_interval, now_utc

log = logging.getLogger(__name__)

__all__ = [
    "FetchResult",
    "Source",
    "SymbolResult",
    "available_sources",
    "fetch_many",
    "get_source",
    "parse_symbols",
    "source_key",
]

#: Registry: source name -> "module:Class" (imported when first asked for).
_REGISTRY: dict[str, str] = {
    "yahoo": "stockpipe.sources.yahoo:YahooSource",
    "alphavantage": "stockpipe.sources.alphavantage:AlphaVantageSource",
    "csv": "stockpipe.sources.csvfile:CsvSource",
    "samples": "stockpipe.sources.samples:SamplesSource",
    "synthetic": "stockpipe.sources.synthetic:SyntheticSource",
}


def available_sources() -> list[str]:
    return sorted(_REGISTRY)


def source_key(name: str) -> str:
    """The registry's key of the source ``name`` (any case); an unknown one lists the known."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise UnknownNameError("source", key, available_sources())
    return key


def _source_class(name: str) -> type[Source]:
    target = _REGISTRY[source_key(name)]
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SetupError(
            f"source {name!r} needs the Python package {exc.name!r}, which is not installed.",
            fix="make setup  (or: .venv/bin/pip install -r requirements.txt)",
        ) from exc
    return getattr(module, cls_name)


def get_source(
    name: str | Source, settings: SourceSettings | None = None, **options: Any
) -> Source:
    """A source by name (``yahoo``, ``alphavantage``, ``csv``, ``samples``, ``synthetic``).

    ``options`` go to the source's constructor (e.g. ``path=`` for ``csv``,
    ``n_symbols=``/``seed=`` for ``synthetic``). A source instance is returned as is.
    """
    if isinstance(name, Source):
        if settings is not None or options:
            raise ParameterError(
                "name", name, "a source name when settings or options are given", use="a name"
            )
        return name
    return _source_class(name)(settings=settings, **options)


def parse_symbols(symbols: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """``"msft, goog"`` or ``["MSFT", "goog"]`` -> ``["MSFT", "GOOG"]`` (order kept, no repeats)."""
    if symbols is None:
        return []
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    out: list[str] = []
    for item in items:
        sym = str(item).strip().upper()
        if sym and sym not in out:
            out.append(sym)
    return out


@dataclass
class SymbolResult:
    """How one symbol went: bar count and time span, or the reason it failed."""

    symbol: str
    rows: int
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    error: str | None = None
    #: the failure is only that the asked window holds no bars
    empty_window: bool = False
    #: what the source says about a fetch that worked (e.g. rows it skipped)
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FetchResult:
    """Bars of every symbol that worked, and one :class:`SymbolResult` per symbol asked."""

    bars: pd.DataFrame
    results: list[SymbolResult] = field(default_factory=list)

    @property
    def failed(self) -> list[SymbolResult]:
        return [r for r in self.results if not r.ok]

    @property
    def window_empty(self) -> bool:
        """No bars because the window holds none for any symbol (no other failure)."""
        return bool(self.results) and all(r.empty_window for r in self.results)

    def summary(self) -> pd.DataFrame:
        """One row per symbol: ``symbol, bars, first, last, error, note``."""
        rows = [
            {
                "symbol": r.symbol,
                "bars": r.rows,
                "first": r.first_ts,
                "last": r.last_ts,
                "error": r.error,
                "note": r.note,
            }
            for r in self.results
        ]
        cols = ["symbol", "bars", "first", "last", "error", "note"]
        return pd.DataFrame(rows, columns=cols)


def fetch_many(
    source: Source,
    symbols: list[str] | tuple[str, ...] | str | None,
    *,
    start: Bound = None,
    end: Bound = None,
    interval: str = "1d",
    batch_id: str,
    progress: bool = True,
    **kw: Any,
) -> FetchResult:
    """Fetch every symbol; a symbol that fails is recorded, never fatal to the run.

    With no symbols, the ones the source lists (``samples``, ``csv`` directory,
    ``synthetic``) are used. ``kw`` goes to ``source.fetch`` (e.g. ``period=`` for
    ``yahoo``). All bars share one ``ingested_at`` and the given ``batch_id``.
    """
    check_interval(interval)
    wanted = parse_symbols(symbols)
    if not wanted:
        listed = source.available_symbols(interval)
        if not listed:
            raise ParameterError(
                "symbols",
                symbols,
                f"enough: source {source.name!r} needs symbols (it lists none for "
                f"interval {interval!r})",
                use='comma separated symbols, e.g. "MSFT,GOOG"',
            )
        wanted = listed
    source.expect_symbols(wanted)
    ingested_at = now_utc()
    frames: list[pd.DataFrame] = []
    results: list[SymbolResult] = []
    bar = tqdm(wanted, desc=f"{source.name} {interval}", unit="symbol", disable=not progress)
    for symbol in bar:
        bar.set_postfix_str(symbol, refresh=False)
        try:
            bars = source.fetch(
                symbol,
                start=start,
                end=end,
                interval=interval,
                batch_id=batch_id,
                ingested_at=ingested_at,
                **kw,
            )
        except SourceError as exc:
            empty = isinstance(exc, EmptyWindowError)
            results.append(SymbolResult(symbol, 0, None, None, str(exc), empty_window=empty))
            continue
        frames.append(bars)
        first, last = bars["ts"].min(), bars["ts"].max()
        results.append(SymbolResult(symbol, len(bars), first, last, note=source.note(symbol)))
        if results[-1].note:
            log.warning("%s: %s: %s", source.name, symbol, results[-1].note)
    bar.close()
    merged = pd.concat(frames, ignore_index=True) if frames else empty_bars()
    return FetchResult(bars=merged, results=results)
