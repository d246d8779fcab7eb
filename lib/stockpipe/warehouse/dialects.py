"""The SQL each warehouse needs, and nothing else: every other step is shared.

Statements are built from names the project defines (tables, columns, Delta
table ids and versions), never from user input; literals are still escaped.
A staging table holds one export's rows plus ``_deleted`` (a key the source
deleted); the upsert applies it to the target in one statement per kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass

import pyarrow as pa

from stockpipe.errors import ParameterError, UnknownNameError, UnsupportedTypeError

#: The staging table's flag column: the key was deleted in the source.
DELETED = "_deleted"
#: The table recording, per warehouse table and lake source, the exported version.
STATE_TABLE = "_stockpipe_exports"
STATE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("target", pa.string()),
    ("source", pa.string()),
    ("table_id", pa.string()),
    ("version", pa.int64()),
    ("mode", pa.string()),
    ("rows", pa.int64()),
    ("exported_at", pa.timestamp("us", "UTC")),
)


@dataclass(frozen=True)
class StateRow:
    """What the state table records of one export (STATE_COLUMNS but the time)."""

    target: str
    source: str
    table_id: str
    version: int
    mode: str
    rows: int


def type_kind(dtype: pa.DataType) -> str | None:
    """The kind of an Arrow type that the dialects map to a SQL type (None: no mapping)."""
    t = pa.types
    checks = (
        ("string", t.is_string(dtype) or t.is_large_string(dtype) or t.is_string_view(dtype)),
        ("float64", t.is_float64(dtype)),
        ("float32", t.is_float32(dtype)),
        ("int64", t.is_int64(dtype)),
        ("int32", t.is_int32(dtype) or t.is_int16(dtype) or t.is_int8(dtype)),
        ("bool", t.is_boolean(dtype)),
        ("timestamptz", t.is_timestamp(dtype) and dtype.tz is not None),
        ("timestamp", t.is_timestamp(dtype)),
        ("date", t.is_date(dtype)),
        ("binary", t.is_binary(dtype) or t.is_large_binary(dtype)),
    )
    return next((kind for kind, match in checks if match), None)


def literal(value: str | int | None) -> str:
    """A SQL literal: NULL, an integer, or a quoted string (quotes doubled)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ParameterError("value", value, "None, an integer or a string")
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Dialect:
    """PostgreSQL's SQL; Snowflake's differs where it overrides."""

    name: str = "postgresql"
    #: ADBC ingests into a session-temporary table (``temporary=True``)
    temporary_stage: bool = True

    # names and types ------------------------------------------------------------------
    def column_name(self, name: str) -> str:
        """A column's name as the warehouse stores it (and ADBC ingest must give it)."""
        return name

    def ident(self, name: str) -> str:
        return '"' + self.column_name(name).replace('"', '""') + '"'

    def table(self, schema: str, name: str) -> str:
        return f"{self.ident(schema)}.{self.ident(name)}"

    #: SQL type of each kind of Arrow type (:func:`type_kind`)
    types: tuple[tuple[str, str], ...] = (
        ("string", "TEXT"),
        ("float64", "DOUBLE PRECISION"),
        ("float32", "REAL"),
        ("int64", "BIGINT"),
        ("int32", "INTEGER"),
        ("bool", "BOOLEAN"),
        ("timestamptz", "TIMESTAMPTZ"),
        ("timestamp", "TIMESTAMP"),
        ("date", "DATE"),
        ("binary", "BYTEA"),
    )

    def column_type(self, column: str, dtype: pa.DataType) -> str:
        name = dict(self.types).get(type_kind(dtype) or "")
        if name is None:
            raise UnsupportedTypeError(self.name, column, dtype)
        return name

    # DDL ------------------------------------------------------------------------------
    def create_schema(self, schema: str) -> str:
        return f"CREATE SCHEMA IF NOT EXISTS {self.ident(schema)}"

    def create_table(self, schema: str, name: str, columns: pa.Schema, key: Sequence[str]) -> str:
        cols = [f"{self.ident(f.name)} {self.column_type(f.name, f.type)}" for f in columns]
        pk = ", ".join(self.ident(k) for k in key)
        body = ",\n  ".join([*cols, f"PRIMARY KEY ({pk})"])
        return f"CREATE TABLE IF NOT EXISTS {self.table(schema, name)} (\n  {body}\n)"

    def create_state_table(self, schema: str) -> str:
        return self.create_table(
            schema, STATE_TABLE, pa.schema(list(STATE_COLUMNS)), ("target", "source")
        )

    def create_stage(self, schema: str, stage: str, target: str) -> list[str]:
        """An empty staging table shaped like ``target``, plus the ``_deleted`` flag,
        dropped when the transaction ends."""
        like = self.table(schema, target)
        return [
            f"CREATE TEMPORARY TABLE {self.ident(stage)} (LIKE {like}) ON COMMIT DROP",
            f"ALTER TABLE {self.ident(stage)} ADD COLUMN {self.ident(DELETED)} BOOLEAN",
        ]

    # DML ------------------------------------------------------------------------------
    def _on(self, key: Sequence[str], left: str = "t", right: str = "s") -> str:
        return " AND ".join(f"{left}.{self.ident(k)} = {right}.{self.ident(k)}" for k in key)

    def _changed(self, columns: Sequence[str], left: str, right: str) -> str:
        """The row differs (nulls compare equal): unchanged rows are not rewritten."""
        return " OR ".join(
            f"{left}.{self.ident(c)} IS DISTINCT FROM {right}.{self.ident(c)}" for c in columns
        )

    def _assignments(
        self, values: Sequence[str], additive: Sequence[str], target: str, new: str
    ) -> str:
        """``SET`` items: a new value, or for ``additive`` columns the sum of both."""
        out = []
        for c in values:
            name = self.ident(c)
            value = f"t.{name} + {new}.{name}" if c in additive else f"{new}.{name}"
            out.append(f"{target}{name} = {value}")
        return ", ".join(out)

    def upsert(
        self,
        schema: str,
        target: str,
        stage: str,
        columns: Sequence[str],
        key: Sequence[str],
        *,
        additive: Sequence[str] = (),
    ) -> list[str]:
        """Apply the staging rows: delete the flagged keys, insert or update the others.

        ``additive`` columns are added to the row's value instead of replacing it
        (counts exported as differences). Unchanged rows are not rewritten.
        """
        values = [c for c in columns if c not in key]
        tables = (self.table(schema, target), self.ident(stage))
        return self._upsert(*tables, columns, values, key, additive)

    def _upsert(self, tgt, stg, columns, values, key, additive) -> list[str]:
        names = ", ".join(self.ident(c) for c in columns)
        sets = self._assignments(values, additive, "", "EXCLUDED")
        where = "" if additive else f" WHERE {self._changed(values, 't', 'EXCLUDED')}"
        conflict = ", ".join(self.ident(k) for k in key)
        return [
            f"DELETE FROM {tgt} AS t USING {stg} AS s WHERE s.{self.ident(DELETED)} "
            f"AND {self._on(key)}",
            f"INSERT INTO {tgt} AS t ({names}) SELECT {names} FROM {stg} "
            f"WHERE NOT {self.ident(DELETED)} ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
            f"{where}",
        ]

    def replace(
        self,
        schema: str,
        target: str,
        stage: str,
        columns: Sequence[str],
        scope: tuple[str, str] | None = None,
    ) -> list[str]:
        """A full reload: the target's rows (within ``scope``: column, value) become the
        staging rows. Inside the export's transaction, so readers see old or new."""
        tgt, stg = self.table(schema, target), self.ident(stage)
        names = ", ".join(self.ident(c) for c in columns)
        where = f" WHERE {self.ident(scope[0])} = {literal(scope[1])}" if scope else ""
        return [
            f"DELETE FROM {tgt}{where}",
            f"INSERT INTO {tgt} ({names}) SELECT {names} FROM {stg} "
            f"WHERE NOT {self.ident(DELETED)}",
        ]

    # the export state -----------------------------------------------------------------
    def _state_key(self, target: str, source: str) -> str:
        return f"{self.ident('target')} = {literal(target)} AND {self.ident('source')} = " + (
            literal(source)
        )

    def select_state(self, schema: str, target: str, source: str) -> str:
        return (
            f"SELECT {self.ident('table_id')}, {self.ident('version')} FROM "
            f"{self.table(schema, STATE_TABLE)} WHERE {self._state_key(target, source)}"
        )

    def insert_state(self, schema: str, row: StateRow) -> str:
        names = ", ".join(self.ident(c) for c, _ in STATE_COLUMNS)
        values = ", ".join([*(literal(v) for v in astuple(row)), "CURRENT_TIMESTAMP"])
        return f"INSERT INTO {self.table(schema, STATE_TABLE)} ({names}) VALUES ({values})"

    def update_state(self, schema: str, row: StateRow, *, was: tuple[str, int]) -> str:
        """Move the recorded version on, only from ``was`` (table id, version): a
        concurrent export that got there first leaves this one updating no row."""
        values = {k: literal(v) for k, v in asdict(row).items() if k not in ("target", "source")}
        sets = ", ".join(
            f"{self.ident(c)} = {v}"
            for c, v in {**values, "exported_at": "CURRENT_TIMESTAMP"}.items()
        )
        return (
            f"UPDATE {self.table(schema, STATE_TABLE)} SET {sets} WHERE "
            f"{self._state_key(row.target, row.source)} AND {self.ident('table_id')} = "
            f"{literal(was[0])} AND {self.ident('version')} = {literal(was[1])}"
        )


@dataclass(frozen=True)
class Snowflake(Dialect):
    """Snowflake: MERGE for the upsert, its type names, upper-case identifiers.

    Identifiers are quoted in upper case, so unquoted names in people's queries
    (``select * from bars``) find them. DDL commits on its own in Snowflake, so the
    staging table is made (and loaded) before the transaction's MERGE and state update.
    """

    name: str = "snowflake"
    #: ingest by the stage's plain name: Snowflake resolves it to the session's
    #: temporary table (which shadows any table of that name)
    temporary_stage: bool = False

    def column_name(self, name: str) -> str:
        return name.upper()

    types: tuple[tuple[str, str], ...] = (
        ("string", "VARCHAR"),
        ("float64", "FLOAT"),
        ("float32", "FLOAT"),
        ("int64", "NUMBER(19,0)"),
        ("int32", "NUMBER(10,0)"),
        ("bool", "BOOLEAN"),
        ("timestamptz", "TIMESTAMP_TZ"),
        ("timestamp", "TIMESTAMP_NTZ"),
        ("date", "DATE"),
        ("binary", "BINARY"),
    )

    def create_stage(self, schema: str, stage: str, target: str) -> list[str]:
        like = self.table(schema, target)
        return [
            f"CREATE OR REPLACE TEMPORARY TABLE {self.ident(stage)} LIKE {like}",
            f"ALTER TABLE {self.ident(stage)} ADD COLUMN {self.ident(DELETED)} BOOLEAN",
        ]

    def _upsert(self, tgt, stg, columns, values, key, additive) -> list[str]:
        sets = self._assignments(values, additive, "t.", "s")
        changed = "" if additive else f" AND ({self._changed(values, 't', 's')})"
        names = ", ".join(self.ident(c) for c in columns)
        news = ", ".join(f"s.{self.ident(c)}" for c in columns)
        deleted = f"s.{self.ident(DELETED)}"
        return [
            f"MERGE INTO {tgt} AS t USING {stg} AS s ON {self._on(key)} "
            f"WHEN MATCHED AND {deleted} THEN DELETE "
            f"WHEN MATCHED{changed} THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED AND NOT {deleted} THEN INSERT ({names}) VALUES ({news})"
        ]


DIALECTS: dict[str, Dialect] = {"postgresql": Dialect(), "snowflake": Snowflake()}


def dialect_for(target: str) -> Dialect:
    if target not in DIALECTS:
        raise UnknownNameError("warehouse dialect", target, list(DIALECTS))
    return DIALECTS[target]
