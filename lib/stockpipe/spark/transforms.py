"""Pure transforms of the bar batch job: raw rows to typed, validated,
de-duplicated bars with derived columns.

The tick job's twin is ``stockpipe.spark.tick_transforms``; both make raw rows with
``stockpipe.spark.records`` and build their reasons with ``stockpipe.spark.checks``.

Every function takes DataFrames and plain scalars and returns DataFrames; none
reads settings, storage or the clock (the job passes ``now`` in), so each one is
tested on tiny in-memory frames. The job around them does the reading and
writing. Time zones: every date and year is taken in UTC from the instant
itself, never from the session time zone.

Flow::

    kafka source --raw_from_kafka--> raw --parse_bars--> parsed
    parsed --flag_bars(now)--> flagged --slim_flagged--> kept (the job caches it)
    kept --split_flagged--> (valid, quarantine)
    kept --census--> counts, reasons and time span of a batch
    valid (into an empty table) --dedupe_bars--> add_derived --> for_processed_write
    valid, processed context --processed_changes--> the rows a MERGE writes
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from stockpipe.schemas import (
    BAR_COLUMNS,
    BAR_KEY,
    BAR_MESSAGE_DDL,
    BAR_REASONS,
    BAR_REQUIRED_FIELDS,
    BAR_TIMESTAMP_FIELDS,
    BAR_TYPED_FIELDS,
    FUTURE_SKEW_S,
    INTERVALS,
    KAFKA_COLUMNS,
    MAX_VOLUME,
    MIN_BAR_TS,
    PARTITION_COLUMNS,
    PRICE_COLUMNS,
    PROCESSED_COLUMNS,
    QUARANTINE_COLUMNS,
    SCHEMA_VERSION,
)
from stockpipe.spark.checks import (
    bad_symbol,
    fence,
    parse_value,
    price_checks,
    split_codes,
    with_reason,
    wrong_type_fields,
)
from stockpipe.spark.records import or_null, utc_date

# Column contracts (the zones' own are in stockpipe.schemas) ---------------------------

#: A valid bar: the bar contract plus the Kafka coordinates used to break ties.
VALID_COLUMNS: tuple[str, ...] = (*BAR_COLUMNS, "partition", "offset", "kafka_timestamp")

#: The bars the longest derived window holds (sma_50), the bar itself included.
LOOKBACK_BARS = 50
#: Calendar time that holds LOOKBACK_BARS bars of an interval, with room for
#: weekends, holidays and halts. A symbol with fewer bars in it gets all its older
#: bars as well, so this bounds the usual cost, not the result.
LOOKBACK: dict[str, timedelta] = {
    "1d": timedelta(days=150),
    "1h": timedelta(days=30),
    "5m": timedelta(days=7),
    "1m": timedelta(days=5),
}

ALL_PRICES: tuple[str, ...] = (*PRICE_COLUMNS, "adj_close")

#: ISO 8601 with a zone (``Z`` or ``±HH:MM``), 0-9 fraction digits (kept to µs).
#: A string without a zone is refused: its instant would be a guess.
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss[.SSSSSSSSS]XXX"

# Small helpers -----------------------------------------------------------------------


def iso_shaped(text: Column) -> Column:
    """True where ``text`` is laid out as TS_FORMAT's usual text, ``yyyy-MM-ddTHH:mm:ss``,
    an optional fraction of 1-9 digits, then ``Z`` or ``±HH:mm``.

    Only separators and lengths are checked (cheaper than a regular expression on
    every bar): a non-digit where a digit
    belongs makes the cast that follows give null, as TS_FORMAT's parser does.
    """
    n = F.length(text)
    z = text.endswith("Z")
    offset = F.substring(text, -6, 1).isin("+", "-") & (F.substring(text, -3, 1) == ":")
    fraction = n - 19 - F.when(z, 1).otherwise(6)  # its length with the dot: 0 or 2-10
    return (
        (z | offset)
        & ((fraction == 0) | (fraction.between(2, 10) & (F.substring(text, 20, 1) == ".")))
        & (F.substring(text, 5, 1) == "-")
        & (F.substring(text, 8, 1) == "-")
        & (F.substring(text, 11, 1) == "T")
        & (F.substring(text, 14, 1) == ":")
        & (F.substring(text, 17, 1) == ":")
    )


def utc_timestamp(text: Column) -> Column:
    """The instant an ISO 8601 text with a zone names (TS_FORMAT); null if it names none.

    The usual text is read with a cast, which gives the same instant as
    TS_FORMAT's parser at a fraction of its cost.
    """
    return F.when(iso_shaped(text), text.try_cast("timestamp")).otherwise(
        F.try_to_timestamp(text, F.lit(TS_FORMAT))
    )


def timestamp_literal(moment: datetime) -> Column:
    """A timestamp literal for ``moment`` (naive means UTC), independent of local zones."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return F.timestamp_micros(F.lit(micros))


# 1. raw -> parsed (Kafka -> raw is stockpipe.spark.records) -------------------------


def parse_bars(raw: DataFrame) -> DataFrame:
    """Parse raw bar values with the message schema, keeping what went wrong.

    Adds the message fields (``symbol`` upper-cased and trimmed; ``ts`` and
    ``ingested_at`` as UTC timestamps, their text in ``ts_raw`` and
    ``ingested_at_raw``), plus ``too_large``, ``json_unparsable`` and
    ``wrong_type_fields`` (see ``checks.parse_value``). Kafka coordinates and
    the raw value stay on every row, so validation can quarantine it as received.
    """
    with_msg = parse_value(raw, BAR_MESSAGE_DDL, BAR_TYPED_FIELDS)

    def ts(name: str) -> Column:
        return utc_timestamp(F.col(f"_msg.{name}"))

    fields = [
        F.col("_msg.schema_version").alias("schema_version"),
        F.upper(F.trim(F.col("_msg.symbol"))).alias("symbol"),
        F.col("_msg.interval").alias("interval"),
        ts("ts").alias("ts"),
        *[F.col(f"_msg.{c}").alias(c) for c in ALL_PRICES],
        F.col("_msg.volume").alias("volume"),
        F.col("_msg.source").alias("source"),
        ts("ingested_at").alias("ingested_at"),
        F.col("_msg.batch_id").alias("batch_id"),
        F.col("_msg.ts").alias("ts_raw"),
        F.col("_msg.ingested_at").alias("ingested_at_raw"),
    ]
    return with_msg.select(
        "key",
        "value",
        or_null(raw, "value_b64", "string").alias("value_b64"),
        or_null(raw, "key_b64", "string").alias("key_b64"),
        *KAFKA_COLUMNS,
        *fields,
        "too_large",
        "json_unparsable",
        wrong_type_fields(with_msg).alias("wrong_type_fields"),
    )


# 2. parsed -> valid, quarantine --------------------------------------------------------


def _reason_checks(now: Column) -> dict[str, Column]:
    """One boolean column per reason code, in BAR_REASONS order."""
    ok_json = ~F.col("json_unparsable") & ~F.col("too_large")

    def wrong_type(name: str) -> Column:
        return F.array_contains("wrong_type_fields", name)

    def missing(name: str) -> Column:
        if name == "ts":
            absent = F.col("ts_raw").isNull()
        elif name in ("symbol", "interval"):
            absent = F.col(name).isNull() | (F.trim(F.col(name)) == "")
        else:
            absent = F.col(name).isNull()
        if name in BAR_TYPED_FIELDS:
            absent = absent & ~wrong_type(name)
        return ok_json & absent

    def finite(name: str) -> Column:
        c = F.col(name)
        return ~F.isnan(c) & (F.abs(c) != F.lit(float("inf")))

    ohlc_finite = F.lit(True)
    for name in PRICE_COLUMNS:
        ohlc_finite = ohlc_finite & finite(name)
    high, low, open_, close = (F.col(c) for c in ("high", "low", "open", "close"))
    # against the record's own Kafka time, not the run's: a replay of a batch
    # decides as the first run did, so no record ends up in two zones
    received = F.coalesce(F.col("kafka_timestamp"), now) + F.expr(
        f"INTERVAL {FUTURE_SKEW_S} SECONDS"
    )

    checks: dict[str, Column] = {
        "invalid_utf8": F.col("value_b64").isNotNull(),
        "record_too_large": F.col("too_large"),
        "unparsable_json": F.col("json_unparsable"),
        **{f"wrong_type_{f}": wrong_type(f) for f in BAR_TYPED_FIELDS},
        **{f"missing_{f}": missing(f) for f in BAR_REQUIRED_FIELDS},
        **{
            f"bad_timestamp_{f}": F.col(f"{f}_raw").isNotNull() & F.col(f).isNull()
            for f in BAR_TIMESTAMP_FIELDS
        },
        "unknown_schema_version": F.col("schema_version") != SCHEMA_VERSION,
        "bad_symbol": bad_symbol(F.col("symbol")),
        "unknown_interval": (
            F.col("interval").isNotNull()
            & (F.trim(F.col("interval")) != "")
            & ~F.col("interval").isin(*INTERVALS)
        ),
        **price_checks(ALL_PRICES),
        "high_below_range": ohlc_finite & (high < F.greatest(open_, close, low)),
        "low_above_range": ohlc_finite & (low > F.least(open_, close)),
        "negative_volume": F.col("volume") < 0,
        "volume_too_large": F.col("volume") > MAX_VOLUME,
        "early_ts": F.col("ts") < timestamp_literal(MIN_BAR_TS),
        "future_ts": F.col("ts") > received,
        "future_ingested_at": F.col("ingested_at") > received,
    }
    assert list(checks) == list(BAR_REASONS), "rules and BAR_REASONS must match"
    return checks


def flag_bars(parsed: DataFrame, now: datetime) -> DataFrame:
    """``parsed`` with ``reason``: the BAR_REASONS codes a row fails, "; "-joined ("" if valid).

    Not fenced: cache the result (as the job does) or ``fence`` it before
    filtering on ``reason``, or each rule (and the parse) is evaluated again in
    the filter.
    """
    return with_reason(parsed, _reason_checks(timestamp_literal(now)))


#: What a valid row no longer needs once parsed: the record text (the raw zone has it).
RECORD_TEXT_COLUMNS: tuple[str, ...] = ("key", "value", "value_b64", "key_b64")

#: What the job keeps (caches) of flagged rows: what the quarantine and the merge read.
FLAGGED_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            "reason",
            *VALID_COLUMNS,
            *(c for c in QUARANTINE_COLUMNS if c not in ("reasons", "quarantined_at")),
        ]
    )
)


def slim_flagged(flagged: DataFrame) -> DataFrame:
    """``flag_bars`` rows as the job caches them: FLAGGED_COLUMNS only, and the
    record text nulled on valid rows (quarantined rows keep it, since the
    quarantine stores the record as received): a much smaller cache.
    """
    bad = F.col("reason") != ""
    return flagged.select(
        *[
            F.when(bad, F.col(c)).alias(c) if c in RECORD_TEXT_COLUMNS else F.col(c)
            for c in FLAGGED_COLUMNS
        ]
    )


def split_flagged(flagged: DataFrame, now: datetime) -> tuple[DataFrame, DataFrame]:
    """Flagged rows as ``(valid, quarantine)``; cache or fence ``flagged`` first."""
    valid = flagged.filter(F.col("reason") == "").select(*VALID_COLUMNS)
    quarantine = (
        flagged.filter(F.col("reason") != "")
        .withColumns(
            {
                "reasons": split_codes(F.col("reason"), "; "),
                "quarantined_at": timestamp_literal(now),
            }
        )
        .select(*QUARANTINE_COLUMNS)
    )
    return valid, quarantine


def census(flagged: DataFrame) -> DataFrame:
    """What a batch of ``flag_bars`` rows holds, in one small aggregation.

    One row per reason (and interval, for valid rows) with ``rows``, and for valid
    rows the earliest and latest ``ts``: enough to count records and quarantine
    reasons and to bound the processed rows a merge reads, in a single pass.
    Quarantined rows give only their reason codes, a bounded set: their interval
    and ts may be any value, and the census is collected to the driver.
    """
    valid = F.col("reason") == ""
    return flagged.groupBy("reason", F.when(valid, F.col("interval")).alias("interval")).agg(
        F.count(F.lit(1)).alias("rows"),
        F.min(F.when(valid, F.col("ts"))).alias("first_ts"),
        F.max(F.when(valid, F.col("ts"))).alias("last_ts"),
    )


def validate_bars(parsed: DataFrame, now: datetime) -> tuple[DataFrame, DataFrame]:
    """Split parsed bars into ``(valid, quarantine)`` on every rule of BAR_REASONS.

    ``now`` is the run time: it decides ``future_ts`` and is ``quarantined_at``.
    """
    return split_flagged(fence(flag_bars(parsed, now)), now)


# 3. dedupe -----------------------------------------------------------------------------


def _latest_first(df: DataFrame) -> list[Column]:
    """Ordering that puts the latest ingestion first; rows from processed/ lack Kafka columns."""
    return [
        F.col("ingested_at").desc_nulls_last(),
        or_null(df, "kafka_timestamp", "timestamp").desc_nulls_last(),
        or_null(df, "offset", "bigint").desc_nulls_last(),
        or_null(df, "partition", "int").desc_nulls_last(),
    ]


def dedupe_bars(df: DataFrame) -> DataFrame:
    """One row per (symbol, interval, ts): the latest ingestion wins.

    Meant for the union of the processed rows already in the lake and the new
    valid rows, so a re-sent bar is not doubled and a corrected bar replaces the
    old one across runs. Ties: ingested_at, then kafka_timestamp, then offset
    (then partition), all descending, nulls last.

    The window is per (symbol, interval) in ts order, the latest first within a
    ts: the same partitioning and order as ``add_derived``, so Spark shuffles and
    sorts the rows once for both.
    """
    w = Window.partitionBy("symbol", "interval").orderBy(F.col("ts").asc(), *_latest_first(df))
    prev_ts = F.lag("ts", 1).over(w)
    return (
        df.withColumn("_first", prev_ts.isNull() | (prev_ts != F.col("ts")))
        .filter("_first")
        .drop("_first")
    )


def count_duplicates(df: DataFrame) -> int:
    """How many rows ``dedupe_bars(df)`` removes (runs one aggregation)."""
    per_key = df.groupBy(*BAR_KEY).count()
    removed = per_key.agg(F.sum(F.col("count") - 1).alias("removed")).first()
    return int(removed["removed"] or 0) if removed else 0


# 4. derived columns --------------------------------------------------------------------


def add_derived(df: DataFrame) -> DataFrame:
    """Add DERIVED_COLUMNS per symbol and interval in ts order (replacing old values).

    On ``price = coalesce(adj_close, close)``: simple and log return from the
    previous bar (null on the first), SMA of the last 20 and 50 prices (null
    until that many bars), volatility_20 as the sample standard deviation of the
    last 20 log returns (not annualized; null until 20 exist), and range_pct =
    (high - low) / close * 100. Windows see the whole history given, so the job
    must pass every bar of an affected symbol and interval, not only new ones.

    Speed: a sliding frame re-aggregates every row's whole frame (O(rows x 50)),
    which took minutes on 1.26 M bars. Window sums are taken instead as
    differences of running sums (O(rows)); the standard deviation from the sums
    of x and x^2 of the window. Valid bars have positive, finite prices, so the
    only null log return is a series' first one: "n values in the window" is
    then a row-number test.
    """
    order = Window.partitionBy("symbol", "interval").orderBy("ts")
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)

    def window_sum(running_col: str, n: int) -> Column:
        return F.col(running_col) - F.coalesce(F.lag(running_col, n).over(order), F.lit(0.0))

    price = F.coalesce(F.col("adj_close"), F.col("close"))
    ratio = F.try_divide(price, F.lag(price, 1).over(order))
    lr = F.coalesce(F.col("log_return"), F.lit(0.0))
    staged = df.withColumns(
        {
            "return": ratio - 1,
            "log_return": F.ln(ratio),
            "_price": price,
            "_rn": F.row_number().over(order),
        }
    ).withColumns(
        {
            "_p1": F.sum("_price").over(running),
            "_l1": F.sum(lr).over(running),
            "_l2": F.sum(lr * lr).over(running),
        }
    )
    n = 20
    l1, l2 = window_sum("_l1", n), window_sum("_l2", n)
    variance = (l2 - l1 * l1 / n) / (n - 1)
    rn = F.col("_rn")
    return staged.withColumns(
        {
            "sma_20": F.when(rn >= 20, window_sum("_p1", 20) / 20),
            "sma_50": F.when(rn >= 50, window_sum("_p1", 50) / 50),
            # 20 log returns exist from the 21st bar on
            "volatility_20": F.when(rn > n, F.sqrt(F.greatest(variance, F.lit(0.0)))),
            "range_pct": F.try_divide(F.col("high") - F.col("low"), F.col("close")) * 100,
        }
    ).drop("_price", "_rn", "_p1", "_l1", "_l2")


# 5. incremental merge ------------------------------------------------------------------

#: Columns whose change moves the derived values of the bars after (prices, volume).
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "adj_close", "volume")
#: Columns that change only their own row (a re-sent bar: same values, later ingestion).
META_COLUMNS: tuple[str, ...] = ("source", "ingested_at", "batch_id")


def lookback(interval: str) -> timedelta:
    """Calendar time that usually holds LOOKBACK_BARS bars of ``interval``."""
    return LOOKBACK.get(interval, timedelta(days=400))


def first_new(new: DataFrame) -> DataFrame:
    """Per (symbol, interval) of a batch's bars: the earliest ``ts`` (``t0``)."""
    return new.groupBy("symbol", "interval").agg(F.min("ts").alias("t0"))


def short_of_context(existing: DataFrame, firsts: DataFrame) -> DataFrame:
    """The (symbol, interval) of ``firsts`` with fewer than LOOKBACK_BARS bars in
    ``existing`` before their ``t0``: their context must reach further back."""
    before = (
        existing.join(firsts, ["symbol", "interval"])
        .filter(F.col("ts") < F.col("t0"))
        .groupBy("symbol", "interval")
        .agg(F.count(F.lit(1)).alias("n"))
    )
    return (
        firsts.join(before, ["symbol", "interval"], "left")
        .filter(F.coalesce(F.col("n"), F.lit(0)) < LOOKBACK_BARS)
        .select("symbol", "interval")
    )


def _same(cols: tuple[str, ...], ref: str) -> Column:
    out = F.lit(True)
    for c in cols:
        out = out & F.col(c).eqNullSafe(F.col(ref).getField(c))
    return out


#: Column of ``processed_changes``: true where the row replaces one in the table.
UPDATE_FLAG = "_update"


def processed_changes(new: DataFrame, existing: DataFrame) -> DataFrame:
    """The processed rows a batch's valid bars change, with their derived columns
    and UPDATE_FLAG (the key is in the table already).

    ``new``: the batch's valid bars (VALID_COLUMNS). ``existing``: processed rows
    of the touched (symbol, interval), from at least LOOKBACK_BARS bars before the
    earliest new bar of each (or from its first bar). The latest ingestion wins
    per key (``dedupe_bars``). A row is returned if its bar is new or replaced,
    or if a bar whose prices or volume changed is among the LOOKBACK_BARS bars up
    to it: those are the rows whose derived values can differ. A bar re-sent with
    the same values changes only its own row; one re-sent as it was, nothing.
    """
    old = existing.select(*BAR_COLUMNS).withColumn("_old", F.lit(True))
    rows = old.unionByName(new.withColumn("_old", F.lit(False)), allowMissingColumns=True)
    same_key = Window.partitionBy("symbol", "interval", "ts")
    rows = rows.withColumns(
        {
            "_old_v": F.max(F.when(F.col("_old"), F.struct(*VALUE_COLUMNS))).over(same_key),
            "_old_m": F.max(F.when(F.col("_old"), F.struct(*META_COLUMNS))).over(same_key),
        }
    )
    winners = dedupe_bars(rows)
    fresh = ~F.col("_old")
    value_changed = fresh & ~(F.col("_old_v").isNotNull() & _same(VALUE_COLUMNS, "_old_v"))
    meta_changed = fresh & ~(F.col("_old_m").isNotNull() & _same(META_COLUMNS, "_old_m"))
    order = Window.partitionBy("symbol", "interval").orderBy("ts")
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    staged = add_derived(
        winners.withColumns(
            {"_vc": value_changed.cast("int"), "_changed": value_changed | meta_changed}
        )
    ).withColumn("_n", F.sum("_vc").over(running))
    recent = F.col("_n") - F.coalesce(F.lag("_n", LOOKBACK_BARS).over(order), F.lit(0))
    marked = staged.withColumns(
        {"_recent": recent > 0, UPDATE_FLAG: F.col("_old") | F.col("_old_v").isNotNull()}
    )
    changed = marked.filter(F.col("_changed") | F.col("_recent"))
    return add_year(changed).select(*PROCESSED_COLUMNS, UPDATE_FLAG)


# 6. processed layout -------------------------------------------------------------------


def add_year(df: DataFrame) -> DataFrame:
    """Add the ``year`` partition column: the UTC year of ``ts``."""
    return df.withColumn("year", F.year(utc_date(F.col("ts"))))


def for_processed_write(df: DataFrame) -> DataFrame:
    """Processed rows in PROCESSED_COLUMNS order, laid out for ``partitionBy(interval, year)``.

    Repartitioned by the partition columns (one file per partition directory)
    and sorted within partitions by interval, year, symbol, ts: the partition
    columns lead so Spark's writer keeps this order instead of re-sorting, and
    each file is then sorted by symbol, ts.
    """
    return (
        add_year(df)
        .select(*PROCESSED_COLUMNS)
        .repartition(*PARTITION_COLUMNS)
        .sortWithinPartitions(*PARTITION_COLUMNS, "symbol", "ts")
    )
