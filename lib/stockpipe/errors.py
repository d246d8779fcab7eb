"""Every error stockpipe raises on purpose: one root, narrow subclasses with structured fields.

Each class says whether running the job again can help (``retryable``), so the
orchestration decides by asking the class, not by a list of names. A class that
means "nothing to do" (``skip``) is no failure: Airflow skips the rest of the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import pyarrow as pa


class StockpipeError(Exception):
    """Root of every error stockpipe raises on purpose.

    Every subclass sets ``retryable`` in its own body (a unit test checks it): a
    newcomer's error must say whether a retry helps, not inherit it by accident.
    """

    #: Can running the same job again, unchanged, succeed (a service back, a lease freed)?
    retryable: ClassVar[bool] = True
    #: Nothing to do: the task is skipped, not failed (implies no retry).
    skip: ClassVar[bool] = False


class SetupError(StockpipeError):
    """A tool is missing or a download or build failed during setup."""

    retryable = False  # a missing tool or a failed build needs a person

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class MissingToolError(SetupError):
    """A command-line tool the setup needs is not installed."""

    retryable = False  # the tool stays missing until someone installs it

    def __init__(self, tool: str, purpose: str, fix: str) -> None:
        self.tool = tool
        super().__init__(f"'{tool}' was not found on PATH; it is needed to {purpose}.", fix=fix)


class ConfigError(StockpipeError):
    """A setting the task needs is missing or invalid; names the variable to set."""

    retryable = False  # the setting stays wrong until someone changes it

    def __init__(self, variable: str, reason: str) -> None:
        self.variable, self.reason = variable, reason
        super().__init__(f"{reason} Set {variable} in the environment or in the project's .env.")


class StackError(StockpipeError):
    """A local service could not be started, reached or stopped."""

    retryable = True  # a service may be up again


class PortInUseError(StackError):
    retryable = True  # whatever holds the port may let it go

    def __init__(self, service: str, port: int, setting: str) -> None:
        self.service, self.port, self.setting = service, port, setting
        super().__init__(
            f"{service} cannot start: port {port} on 127.0.0.1 is already in use. "
            f"Stop whatever holds it, or choose another port with {setting} in .env."
        )


class SourceError(StockpipeError):
    """A data source could not deliver bars for one symbol."""

    retryable = True  # an API or a network failing now may answer later

    def __init__(self, source: str, symbol: str, reason: str) -> None:
        self.source, self.symbol, self.reason = source, symbol, reason
        super().__init__(f"{source}: {symbol}: {reason}")


class EmptyWindowError(SourceError):
    """The source has no bars for a symbol in the asked window (a weekend, a holiday)."""

    retryable = True  # a provider may publish a recent window's bars late


class CsvFormatError(StockpipeError, ValueError):
    """The file is not a price CSV this parser can read; the message says what is wrong."""

    retryable = False  # the file stays as it is until someone fixes or replaces it


class FrameError(StockpipeError, ValueError):
    """A live-feed frame that is not a PricingData message; the text says why."""

    retryable = False  # a malformed frame stays malformed (the feed quarantines it)


class NothingNewError(StockpipeError):
    """A run found nothing to do: not a failure (Airflow skips the rest of the run)."""

    retryable = False  # there is nothing to do again
    skip = True


class RateLimitError(SourceError):
    """The API kept rate limiting after every retry."""

    retryable = True  # the limit resets with time


class ParameterError(StockpipeError, ValueError):
    """A parameter (of a job, a notebook, a DAG run) has a value no run can use.

    Names the parameter, the value and what it takes: ``parameter `start`:
    '2017-13-45' is not a date (use an ISO date, e.g. 2024-01-31)``.
    """

    retryable = False  # the same value is refused again

    def __init__(self, parameter: str, value: object, expected: str, *, use: str = "") -> None:
        self.parameter, self.value, self.expected, self.use = parameter, value, expected, use
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"parameter `{self.parameter}`: {self.value!r} is not {self.expected}"
        return f"{text} (use {self.use})" if self.use else text


class UnknownNameError(ParameterError):
    """A name looked up in a registry is not known; lists the allowed ones."""

    retryable = False  # the name stays unknown

    def __init__(self, kind: str, name: str, allowed: list[str]) -> None:
        self.kind, self.name, self.allowed = kind, name, allowed
        super().__init__(kind, name, "one of: " + ", ".join(sorted(allowed)))

    def describe(self) -> str:
        return f"unknown {self.kind} {self.name!r}; choose {self.expected}"


class MissingColumnsError(StockpipeError, ValueError):
    """A frame lacks columns that a contract (bars, a chart, a source's answer) needs."""

    retryable = False  # the same frame lacks the same columns

    def __init__(self, what: str, missing: list[str]) -> None:
        self.what, self.missing = what, missing
        super().__init__(f"{what} are missing columns: {', '.join(missing)}")


class DeliveryError(StockpipeError):
    """Kafka did not confirm some records."""

    retryable = True  # brokers recover; the records are sent again

    def __init__(self, failed: int, sent: int, reasons: dict[str, int]) -> None:
        self.failed, self.sent, self.reasons = failed, sent, reasons
        detail = "; ".join(f"{r} ({n})" for r, n in reasons.items())
        super().__init__(f"{failed} of {sent} records were not confirmed by Kafka: {detail}")


class StreamingError(StockpipeError):
    """A streaming query stopped with an error."""

    retryable = True  # the query restarts from its checkpoint

    def __init__(self, query: str, reason: str) -> None:
        self.query, self.reason = query, reason
        super().__init__(f"streaming query {query} failed: {reason}")


class LakeError(StockpipeError):
    """The lake cannot be written or read as asked."""

    retryable = True  # storage failing now may answer later


class LeaseHeldError(LakeError):
    """Another job holds the lease of a table this job must write."""

    retryable = True  # the other writer finishes or its lease expires

    def __init__(self, table: str, holder: str) -> None:
        self.table, self.holder = table, holder
        super().__init__(
            f"{table} is being written by {holder}; one writer per table: wait for it to "
            "finish (a crashed job's lease expires by itself) and run this job again"
        )


class LeaseLostError(LakeError):
    """A job's lease expired and another job took it over: it must not commit."""

    retryable = True  # a new run takes a lease of its own


class TopicResetError(LakeError):
    """A topic's offsets no longer follow on from what the lake has read."""

    retryable = False  # a person must choose where to read from (reset_topic)


class WindowDefinitionError(LakeError):
    """A streaming run asks for windows other than those the windows table holds."""

    retryable = False  # a person must choose: the table's definition, or replace its windows

    def __init__(self, held: str, asked: str) -> None:
        self.held, self.asked = held, asked
        super().__init__(
            f"processed/tick_windows holds {held}, but this run asks for {asked}: one table "
            "holds one definition, or its open windows would be written with part of their "
            f"ticks. Run with {held}, or replace the table's windows with the new ones: "
            "`stockpipe stream --replace-windows` (they are computed again from the first "
            "tick the topic holds; see docs/operations.md, 'Changing the window definition')."
        )


class ChangeFeedUnavailable(LakeError):
    """The change data feed of a version range cannot be read (a full reload is needed)."""

    retryable = True  # the export reloads the table in full by itself

    def __init__(self, table: str, start: int, end: int, reason: str) -> None:
        self.table, self.start, self.end, self.reason = table, start, end, reason
        super().__init__(
            f"the change data feed of {table} for versions {start}..{end} cannot be read ({reason})"
        )


class RetentionTooShortError(LakeError, ValueError):
    """A VACUUM retention under seven days asked for without the force flag."""

    retryable = False  # the same retention is refused again

    def __init__(self, hours: float, minimum: float) -> None:
        self.hours, self.minimum = hours, minimum
        super().__init__(
            f"a VACUUM retention of {hours:g} h is under {minimum:g} h ({minimum / 24:g} days): "
            "it may delete files that a reader of a recent version (a running query, time "
            "travel, a job that listed the table) still needs. Pass force (--force) only "
            "when nothing reads the table."
        )


class ExportError(StockpipeError):
    """The export of a table failed; says which and why."""

    retryable = True  # the warehouse or the lake may answer later


class ConcurrentExportError(ExportError):
    """Another export moved the recorded version on first (this one rolled back)."""

    retryable = True  # the next try starts from the version the other export recorded


class UnsupportedTypeError(StockpipeError, TypeError):
    """A lake column has a type the warehouse dialect cannot map to a SQL type."""

    retryable = False  # the column keeps its type

    def __init__(self, dialect: str, column: str, dtype: pa.DataType) -> None:
        self.column, self.dtype = column, dtype
        super().__init__(f"{dialect}: no column type for {column} ({dtype})")


class SecretParameterError(StockpipeError, ValueError):
    """A notebook parameter carries a secret, which would be stored in the executed notebook."""

    retryable = False  # the same parameters carry the same secret

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"notebook parameter {name!r} contains a secret; secrets reach notebooks "
            "through the environment (.env) only, never as parameters"
        )


class DemoError(StockpipeError):
    """A step of the demo failed; says which and where its log is."""

    retryable = True  # a step fails mostly on a service; the log says which
