"""What the export loads: each warehouse table, its lake sources, key and columns.

Pure data: which Delta table feeds which warehouse table, and how its rows are shaped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from stockpipe.errors import UnknownNameError
from stockpipe.schemas import BAR_COLUMNS, BAR_KEY, DERIVED_COLUMNS


@dataclass(frozen=True)
class WarehouseTable:
    """A warehouse table and the lake tables (zone names) it is exported from.

    ``kind``: ``rows`` copies the source's rows (``columns``, None: all of them);
    ``counts`` holds quarantined records counted by (zone, date, reason), the
    counts moved by differences (``additive``) so that an export reads only what
    changed. A full reload of one source replaces only that source's rows
    (``scope`` column = the source's zone path).
    """

    name: str
    sources: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[str, ...] | None = None
    kind: str = "rows"
    additive: tuple[str, ...] = ()
    scope: str | None = None


#: Columns of ``quarantine_counts``; ``date`` is the day the record was quarantined.
COUNT_SCHEMA = pa.schema(
    [
        ("zone", pa.string()),
        ("date", pa.date32()),
        ("reason", pa.string()),
        ("rows", pa.int64()),
    ]
)
#: The date column of each quarantine table (its partition column).
QUARANTINE_DATE = {"quarantine_bars": "quarantine_date", "quarantine_ticks": "ingest_date"}

WAREHOUSE_TABLES: dict[str, WarehouseTable] = {
    t.name: t
    for t in (
        WarehouseTable("bars", ("processed_bars",), BAR_KEY, (*BAR_COLUMNS, *DERIVED_COLUMNS)),
        WarehouseTable("tick_windows", ("tick_windows",), ("symbol", "window_start", "window_end")),
        WarehouseTable(
            "quarantine_counts",
            ("quarantine_bars", "quarantine_ticks"),
            ("zone", "date", "reason"),
            tuple(COUNT_SCHEMA.names),
            kind="counts",
            additive=("rows",),
            scope="zone",
        ),
    )
}


def resolve(names: str | list[str] | tuple[str, ...] | None) -> list[WarehouseTable]:
    """The warehouse tables asked for (comma separated or a list); empty: all."""
    if isinstance(names, str):
        names = names.split(",")
    wanted = [n.strip() for n in (names or []) if n and n.strip()]
    if not wanted:
        return list(WAREHOUSE_TABLES.values())
    out = []
    for name in wanted:
        if name not in WAREHOUSE_TABLES:
            raise UnknownNameError("warehouse table", name, list(WAREHOUSE_TABLES))
        if WAREHOUSE_TABLES[name] not in out:
            out.append(WAREHOUSE_TABLES[name])
    return out
