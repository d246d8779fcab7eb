"""One root exception for the project and narrow subclasses with structured fields."""

from __future__ import annotations


class StockpipeError(Exception):
    """Root of every error stockpipe raises on purpose."""


class SetupError(StockpipeError):
    """A tool is missing or a download or build failed during setup."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class MissingToolError(SetupError):
    """A command-line tool the setup needs is not installed."""

    def __init__(self, tool: str, purpose: str, fix: str) -> None:
        self.tool = tool
        super().__init__(f"'{tool}' was not found on PATH; it is needed to {purpose}.", fix=fix)


class ConfigError(StockpipeError):
    """A setting the task needs is missing or invalid; names the variable to set."""

    def __init__(self, variable: str, reason: str) -> None:
        self.variable, self.reason = variable, reason
        super().__init__(f"{reason} Set {variable} in the environment or in the project's .env.")


class StackError(StockpipeError):
    """A local service could not be started, reached or stopped."""


class PortInUseError(StackError):
    def __init__(self, service: str, port: int, setting: str) -> None:
        self.service, self.port, self.setting = service, port, setting
        super().__init__(
            f"{service} cannot start: port {port} on 127.0.0.1 is already in use. "
            f"Stop whatever holds it, or choose another port with {setting} in .env."
        )


class SourceError(StockpipeError):
    """A data source could not deliver bars for one symbol."""

    def __init__(self, source: str, symbol: str, reason: str) -> None:
        self.source, self.symbol, self.reason = source, symbol, reason
        super().__init__(f"{source}: {symbol}: {reason}")


class EmptyWindowError(SourceError):
    """The source has no bars for a symbol in the asked window (a weekend, a holiday)."""


class NothingNewError(StockpipeError):
    """A run found nothing to do: not a failure (Airflow skips the rest of the run)."""


class RateLimitError(SourceError):
    """The API kept rate limiting after every retry."""


class UnknownNameError(StockpipeError, ValueError):
    """A name looked up in a registry is not known; lists the allowed ones."""

    def __init__(self, kind: str, name: str, allowed: list[str]) -> None:
        self.kind, self.name, self.allowed = kind, name, allowed
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(allowed))}")


class DeliveryError(StockpipeError):
    """Kafka did not confirm some records."""

    def __init__(self, failed: int, sent: int, reasons: dict[str, int]) -> None:
        self.failed, self.sent, self.reasons = failed, sent, reasons
        detail = "; ".join(f"{r} ({n})" for r, n in reasons.items())
        super().__init__(f"{failed} of {sent} records were not confirmed by Kafka: {detail}")


class StreamingError(StockpipeError):
    """A streaming query stopped with an error."""

    def __init__(self, query: str, reason: str) -> None:
        self.query, self.reason = query, reason
        super().__init__(f"streaming query {query} failed: {reason}")


class LakeError(StockpipeError):
    """The lake cannot be written or read as asked."""


class LeaseHeldError(LakeError):
    """Another job holds the lease of a table this job must write."""

    def __init__(self, table: str, holder: str) -> None:
        self.table, self.holder = table, holder
        super().__init__(
            f"{table} is being written by {holder}; one writer per table: wait for it to "
            "finish (a crashed job's lease expires by itself) and run this job again"
        )


class LeaseLostError(LakeError):
    """A job's lease expired and another job took it over: it must not commit."""


class TopicResetError(LakeError):
    """A topic's offsets no longer follow on from what the lake has read."""
