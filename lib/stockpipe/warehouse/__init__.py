"""The SQL warehouse: processed data from the lake's Delta tables, exactly once.

``export.export()`` reads what changed in each Delta table since the last export
(its change data feed), bulk-loads it through ADBC into a staging table and
upserts it by the table's key, recording the exported table version in the same
transaction. PostgreSQL is the local default, Snowflake a setting away; the
dialect differences live in ``dialects``.
"""
