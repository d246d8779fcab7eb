"""The warehouse export without services: change-feed transforms, the dialects' SQL,
and the Snowflake path against the ADBC DB-API interface (Snowflake is not reachable)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pyarrow as pa
import pytest

from stockpipe.config import load_settings
from stockpipe.errors import ConcurrentExportError, ConfigError
from stockpipe.warehouse import changes as C
from stockpipe.warehouse.connection import snowflake_options
from stockpipe.warehouse.dialects import DELETED, dialect_for, literal
from stockpipe.warehouse.export import Loader, Plan
from stockpipe.warehouse.tables import WAREHOUSE_TABLES, resolve


def feed(rows):
    """A change feed: (k, v, change type, commit version) rows."""
    k, v, t, n = zip(*rows, strict=True)
    return pa.table(
        {
            "k": pa.array(k, pa.string_view()),
            "v": pa.array(v, pa.float64()),
            "_change_type": list(t),
            "_commit_version": pa.array(n, pa.int64()),
        }
    )


def as_dict(table: pa.Table) -> dict:
    return {r["k"]: (r["v"], r[DELETED]) for r in table.to_pylist()}


def test_latest_change_per_key_wins_and_an_overwrite_keeps_the_rows_it_rewrites():
    changes = feed(
        [
            ("a", 1.0, "insert", 3),
            ("a", 1.0, "update_preimage", 4),
            ("a", 2.0, "update_postimage", 4),
            ("b", 5.0, "insert", 3),
            ("b", 5.0, "delete", 5),  # gone
            ("c", 7.0, "delete", 6),  # an overwrite: deleted and inserted in one commit
            ("c", 8.0, "insert", 6),
            ("d", 9.0, "insert", 6),
        ]
    )
    out = C.latest_changes(changes, ["k"], ["k", "v"])
    assert as_dict(out) == {
        "a": (2.0, False),
        "b": (5.0, True),
        "c": (8.0, False),
        "d": (9.0, False),
    }
    assert out.schema.field("k").type == pa.string()  # views cast for every driver
    assert out.column_names == ["k", "v", DELETED]


def test_a_feed_with_only_preimages_or_nothing_gives_no_rows():
    out = C.latest_changes(feed([("a", 1.0, "update_preimage", 2)]), ["k"], ["k", "v"])
    assert out.num_rows == 0 and out.column_names == ["k", "v", DELETED]


def test_quarantine_counts_split_reasons_and_count_deletes_negative():
    day = dt.date(2026, 1, 2)
    changes = pa.table(
        {
            "quarantine_date": [day, day, day, day],
            "reason": ["invalid_utf8; unparsable_json", "unparsable_json", "x", "x"],
            "_change_type": ["insert", "insert", "insert", "delete"],
        }
    )
    out = C.count_changes(changes, "quarantine/bars", "quarantine_date")
    got = Counter({(r["date"], r["reason"]): r["rows"] for r in out.to_pylist()})
    assert got == {(day, "invalid_utf8"): 1, (day, "unparsable_json"): 2}  # x: +1 -1 = 0
    assert set(out.column("zone").to_pylist()) == {"quarantine/bars"}
    snap = C.count_changes(changes.drop(["_change_type"]), "q", "quarantine_date", snapshot=True)
    assert dict(zip(snap["reason"].to_pylist(), snap["rows"].to_pylist(), strict=True))["x"] == 2


def test_table_names_resolve_and_a_bad_one_lists_the_allowed():
    assert [t.name for t in resolve("bars, quarantine_counts")] == ["bars", "quarantine_counts"]
    assert len(resolve(None)) == len(WAREHOUSE_TABLES)
    with pytest.raises(ValueError, match="tick_windows"):
        resolve("nope")


def test_postgres_upsert_deletes_flagged_keys_and_rewrites_only_changed_rows():
    d = dialect_for("postgresql")
    delete, insert = d.upsert("wh", "bars", "stage_bars", ["k", "v", "return"], ["k"])
    assert delete == (
        'DELETE FROM "wh"."bars" AS t USING "stage_bars" AS s WHERE s."_deleted" AND t."k" = s."k"'
    )
    assert 'ON CONFLICT ("k") DO UPDATE SET "v" = EXCLUDED."v", "return" = EXCLUDED."return"' in (
        insert
    )
    assert insert.endswith(
        'WHERE t."v" IS DISTINCT FROM EXCLUDED."v" OR t."return" IS DISTINCT FROM EXCLUDED."return"'
    )
    [_, counts] = d.upsert("wh", "q", "s", ["k", "rows"], ["k"], additive=["rows"])
    assert counts.endswith('DO UPDATE SET "rows" = t."rows" + EXCLUDED."rows"')


def test_snowflake_statements_merge_with_upper_case_names_and_its_types():
    d = dialect_for("snowflake")
    [merge] = d.upsert(
        "STOCKPIPE", "bars", "stage_bars", ["symbol", "ts", "close"], ["symbol", "ts"]
    )
    assert merge == (
        'MERGE INTO "STOCKPIPE"."BARS" AS t USING "STAGE_BARS" AS s ON t."SYMBOL" = s."SYMBOL" '
        'AND t."TS" = s."TS" WHEN MATCHED AND s."_DELETED" THEN DELETE '
        'WHEN MATCHED AND (t."CLOSE" IS DISTINCT FROM s."CLOSE") THEN UPDATE SET '
        't."CLOSE" = s."CLOSE" WHEN NOT MATCHED AND NOT s."_DELETED" THEN INSERT '
        '("SYMBOL", "TS", "CLOSE") VALUES (s."SYMBOL", s."TS", s."CLOSE")'
    )
    schema = pa.schema(
        [
            ("symbol", pa.string()),
            ("ts", pa.timestamp("us", "UTC")),
            ("volume", pa.int64()),
            ("close", pa.float64()),
            ("date", pa.date32()),
        ]
    )
    ddl = d.create_table("STOCKPIPE", "bars", schema, ["symbol", "ts"])
    for part in (
        '"SYMBOL" VARCHAR',
        '"TS" TIMESTAMP_TZ',
        '"VOLUME" NUMBER(19,0)',
        '"CLOSE" FLOAT',
        '"DATE" DATE',
        'PRIMARY KEY ("SYMBOL", "TS")',
    ):
        assert part in ddl
    assert d.create_stage("STOCKPIPE", "stage_bars", "bars")[0] == (
        'CREATE OR REPLACE TEMPORARY TABLE "STAGE_BARS" LIKE "STOCKPIPE"."BARS"'
    )
    assert literal("it's") == "'it''s'" and literal(7) == "7" and literal(None) == "NULL"


class FakeCursor:
    """The DB-API cursor surface the export uses (execute, rowcount, fetchone,
    adbc_ingest), recording every call."""

    def __init__(self, conn):
        self.conn, self.rowcount = conn, -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql):
        self.conn.log.append(("execute", sql))
        self.rowcount = self.conn.rowcounts.pop(0) if self.conn.rowcounts else 0

    def fetchone(self):
        return None

    def adbc_ingest(self, table_name, data, mode="create", *, temporary=False, **kw):
        self.conn.log.append(("ingest", table_name, mode, temporary, data))
        return data.num_rows


class FakeConnection:
    def __init__(self, rowcounts=()):
        self.log: list = []
        self.rowcounts = list(rowcounts)

    def cursor(self):
        return FakeCursor(self)

    def commit(self):
        self.log.append(("commit",))

    def rollback(self):
        self.log.append(("rollback",))


class FakeDelta:
    """The two things Loader.record asks of a Delta table."""

    class _Meta:
        id = "table-1"

    def metadata(self):
        return self._Meta()

    def version(self):
        return 12


def test_snowflake_load_stages_through_adbc_ingest_then_one_merge_and_the_state():
    spec = WAREHOUSE_TABLES["bars"]
    rows = pa.table(
        {
            "symbol": ["MSFT"],
            "interval": ["1d"],
            "ts": pa.array([0], pa.timestamp("us", "UTC")),
            "close": [1.5],
            DELETED: [False],
        }
    )
    conn = FakeConnection(rowcounts=[0, 0, 1, 1])  # create, alter, merge, state update
    loader = Loader(conn, dialect_for("snowflake"), "STOCKPIPE")
    stage = loader.stage(spec, rows)
    p = Plan("incremental", rows, 1)
    assert loader.apply(spec, "processed_bars", stage, p) == (1, 0)
    loader.record(spec, "processed_bars", FakeDelta(), p, ("table-1", 10))
    kinds = [entry[0] for entry in conn.log]
    assert kinds == ["execute", "execute", "ingest", "execute", "execute"]
    _, name, mode, temporary, data = conn.log[2]
    assert (name, mode, temporary) == ("STAGE_BARS", "append", False)
    assert data.column_names == ["SYMBOL", "INTERVAL", "TS", "CLOSE", "_DELETED"]
    assert conn.log[3][1].startswith('MERGE INTO "STOCKPIPE"."BARS"')
    update = conn.log[4][1]
    assert update.startswith('UPDATE "STOCKPIPE"."_STOCKPIPE_EXPORTS" SET "TABLE_ID" = \'table-1\'')
    assert update.endswith('"TABLE_ID" = \'table-1\' AND "VERSION" = 10')


def test_a_state_update_that_finds_no_row_is_a_concurrent_export():
    conn = FakeConnection(rowcounts=[0])
    loader = Loader(conn, dialect_for("postgresql"), "wh")
    p = Plan("incremental", pa.table({"k": [1]}), 1)
    with pytest.raises(ConcurrentExportError, match="another export recorded a version first"):
        loader.record(WAREHOUSE_TABLES["bars"], "processed_bars", FakeDelta(), p, ("table-1", 9))


def test_snowflake_settings_key_pair_first_and_a_missing_one_named(tmp_path):
    base = dict(
        snowflake_account="acme-x1",
        snowflake_user="loader",
        snowflake_warehouse="WH",
        snowflake_database="DB",
    )
    s = load_settings(
        tmp_path / "none.env", **base, snowflake_private_key="PEM", snowflake_password="pw"
    )
    opts = snowflake_options(s)
    assert opts["adbc.snowflake.sql.auth_type"] == "auth_jwt"
    assert opts["adbc.snowflake.sql.client_option.jwt_private_key_pkcs8_value"] == "PEM"
    assert "password" not in opts and opts["adbc.snowflake.sql.schema"] == "STOCKPIPE"
    s = load_settings(tmp_path / "none.env", **base, snowflake_password="pw")
    assert snowflake_options(s)["password"] == "pw"
    with pytest.raises(ConfigError, match="STOCKPIPE_SNOWFLAKE_PRIVATE_KEY"):
        snowflake_options(load_settings(tmp_path / "none.env", **base))
    with pytest.raises(ConfigError, match="STOCKPIPE_SNOWFLAKE_WAREHOUSE"):
        snowflake_options(
            load_settings(tmp_path / "none.env", **{**base, "snowflake_warehouse": ""})
        )
    assert "PEM" not in repr(s) and "pw" not in str(s.snowflake_password)
