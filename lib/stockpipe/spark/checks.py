"""Validation shared by the bar and tick jobs, as column logic.

A JSON parse that keeps what went wrong (``parse_value``), the bounds of
``stockpipe.schemas`` as conditions, and every failed rule of a row joined into
its ``reason`` (``with_reason``), kept from the optimizer's rewrites by
``fence``. Both jobs build their rules from these, so a bound or a record-level
check means the same in either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stockpipe.schemas import MAX_PRICE, MAX_RECORD_BYTES, SYMBOL_PATTERN

CORRUPT = "_corrupt_record"


def flag(condition: Column) -> Column:
    """A condition where null (unknown) counts as not failed."""
    return F.coalesce(condition, F.lit(False))


def any_of(conditions: Iterable[Column]) -> Column:
    out = F.lit(False)
    for c in conditions:
        out = out | c
    return out


def split_codes(joined: Column, sep: str) -> Column:
    """``joined`` split on ``sep``; an empty array for "" or null (compiled, unlike lambdas)."""
    return F.when(F.coalesce(joined, F.lit("")) == "", F.array().cast("array<string>")).otherwise(
        F.split(joined, sep)
    )


def parse_value(raw: DataFrame, ddl: str, typed_fields: Sequence[str]) -> DataFrame:
    """``raw`` (with a string ``value``) and the value parsed with ``ddl``, faults kept.

    Adds ``_msg`` (the parsed struct; null fields where the JSON has none),
    ``too_large`` (over MAX_RECORD_BYTES: never parsed, so a hostile value costs
    nothing), ``json_unparsable`` (not a JSON object of the message shape) and
    ``_wrong`` (the comma-joined ``typed_fields`` present with a JSON type that does
    not fit, e.g. ``"open": "abc"``).
    """
    too_large = F.octet_length("value") > MAX_RECORD_BYTES
    text = F.when(~too_large, F.col("value"))
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    msg = F.col("_msg")
    corrupt = msg.getField(CORRUPT).isNotNull()
    # from_json returns partial results for a corrupt object: a field present in
    # the JSON text but null after parsing had a type that does not fit. A
    # comma-joined string, not array_compact: that one is a lambda, which is
    # never compiled and made the whole parse run interpreted.
    wrong = F.concat_ws(
        ",",
        *[
            F.when(
                corrupt
                & F.get_json_object("value", f"$.{name}").isNotNull()
                & msg.getField(name).isNull(),
                F.lit(name),
            )
            for name in typed_fields
        ],
    )
    parsed = F.from_json(text, f"{ddl}, {CORRUPT} STRING", options)
    with_msg = raw.withColumns({"_msg": parsed, "too_large": flag(too_large)}).withColumn(
        "_wrong", wrong
    )
    # only a corrupt value is re-read for its keys: under ``&`` the optimizer
    # hoisted json_object_keys out as a common subexpression, for every row
    is_object = F.json_object_keys("value").isNotNull()
    unparsable = ~F.col("too_large") & (
        msg.isNull() | flag(F.when(corrupt, ~is_object | (F.col("_wrong") == "")))
    )
    return with_msg.withColumn("json_unparsable", flag(unparsable))


def wrong_type_fields(parsed: DataFrame) -> Column:
    """``_wrong`` of ``parse_value`` as an array (empty for an unparsable value)."""
    return split_codes(F.when(~F.col("json_unparsable"), F.col("_wrong")), ",")


def is_non_finite(c: Column) -> Column:
    return F.isnan(c) | (F.abs(c) == F.lit(float("inf")))


def price_checks(columns: Sequence[str]) -> dict[str, Column]:
    """``non_finite_price``, ``non_positive_price`` and ``price_too_large`` over ``columns``.

    Spark orders NaN above every number, so each bound excludes it explicitly.
    Plain column logic, no lambdas: higher-order functions are not compiled.
    """
    finite = {c: ~is_non_finite(F.col(c)) for c in columns}
    return {
        "non_finite_price": any_of(flag(is_non_finite(F.col(c))) for c in columns),
        "non_positive_price": any_of(flag(finite[c] & (F.col(c) <= 0)) for c in columns),
        "price_too_large": any_of(flag(finite[c] & (F.col(c) > MAX_PRICE)) for c in columns),
    }


def bad_symbol(symbol: Column) -> Column:
    """A symbol given (not blank) that breaks SYMBOL_PATTERN."""
    return symbol.isNotNull() & (F.trim(symbol) != "") & ~symbol.rlike(SYMBOL_PATTERN)


def fence(df: DataFrame) -> DataFrame:
    """The same rows, behind a node the optimizer cannot push filters through.

    Without it, a filter on a column computed from many others (like
    ``reasons``) is rewritten in terms of their full expressions, which
    repeats ``from_json`` dozens of times per row in one oversized,
    non-compiled condition. ``inline`` of a one-element array is such a node.
    """
    return df.select(F.inline(F.array(F.struct(*[F.col(f"`{c}`") for c in df.columns]))))


def with_reason(df: DataFrame, checks: Mapping[str, Column]) -> DataFrame:
    """``df`` plus ``reason``: the codes of ``checks`` a row fails, "; "-joined in their
    order ("" if it fails none; a null check counts as passed).

    One small boolean column per rule first: that keeps each generated method small
    enough to be compiled (one giant expression falls back to interpretation).
    """
    staged = df.withColumns({f"_chk_{code}": flag(cond) for code, cond in checks.items()})
    reason = F.concat_ws("; ", *[F.when(F.col(f"_chk_{code}"), F.lit(code)) for code in checks])
    return staged.withColumn("reason", reason).drop(*[f"_chk_{code}" for code in checks])
