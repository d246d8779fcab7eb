"""Where the jobs are in their Kafka topics, from the offsets their tables hold, and
whether a topic still follows on from them. No Spark: both jobs check before they start.

The tables record their offsets in their commits (``stockpipe.tables``); a topic that
was deleted and created again, or whose records retention deleted before a table read
them, stops a job with :class:`TopicResetError` naming the reset a person must choose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stockpipe.config import Settings
from stockpipe.errors import TopicResetError
from stockpipe.kafka import offset_bounds, topic_id
from stockpipe.lake import ZONES
from stockpipe.tables import TopicProgress, kafka_progress


@dataclass(frozen=True)
class TopicState:
    """What the topic holds now, and where each of a job's tables is in it."""

    topic: str
    topic_id: str | None
    first: dict[int, int]
    end: dict[int, int]
    tables: dict[str, dict[str, TopicProgress]]

    def progress(self, table: str) -> TopicProgress:
        return self.tables[table].get(self.topic) or TopicProgress({}, None)

    def start(self, tables: Sequence[str]) -> dict[int, int]:
        """Next offset to read per partition: where the one of ``tables`` furthest
        behind is (one that has read nothing of a partition is at its first offset)."""
        out = {}
        for p in self.end:
            done = [self.progress(t).offsets.get(p) for t in tables]
            out[p] = min(self.first[p] if d is None else d for d in done)
        return out

    def pending(self, tables: Sequence[str]) -> int:
        start = self.start(tables)
        return sum(max(0, e - max(start[p], self.first[p])) for p, e in self.end.items())


def topic_state(settings: Settings, topic: str, tables: Sequence[str]) -> TopicState:
    first, end = offset_bounds(settings, topic)
    held = {t: kafka_progress(settings, t) for t in tables}
    return TopicState(topic, topic_id(settings, topic), first, end, held)


def check_topic(state: TopicState, tables: Sequence[str], command: str) -> None:
    """Stop, saying what happened, if the topic no longer follows on from ``tables``.

    A topic deleted and created again (a new id, or fewer records than a table has
    read), or retention that deleted records before they were read, would otherwise
    make the job skip records or read others twice without a word. ``command`` is the
    job's command line, whose ``--reset-topic`` the message names.
    """
    how = (
        f"If this is expected, run `{command} --reset-topic earliest` (read the topic "
        f"as it is now from its first record) or `--reset-topic latest` (only what arrives "
        f"from now on); see docs/operations.md, 'Resetting a topic'."
    )
    for table in tables:
        progress = state.tables[table].get(state.topic)
        if progress is None:
            continue
        if progress.topic_id and state.topic_id and progress.topic_id != state.topic_id:
            raise TopicResetError(
                f"topic {state.topic} was deleted and created again: its id is now "
                f"{state.topic_id}, but {ZONES[table]} was read from the topic with id "
                f"{progress.topic_id}. {how}"
            )
        behind = {p: (o, state.end.get(p)) for p, o in progress.offsets.items()}
        ahead = {p: v for p, v in behind.items() if v[1] is None or v[1] < v[0]}
        if ahead:
            raise TopicResetError(
                f"topic {state.topic} holds fewer records than {ZONES[table]} has read "
                f"(partition: (offset read up to, topic's end now)): {ahead}; the topic was "
                f"recreated or its offsets reset. {how}"
            )
    start = state.start(tables)
    lost = {p: (start[p], state.first[p]) for p in state.end if start[p] < state.first[p]}
    if lost:
        raise TopicResetError(
            f"records of {state.topic} were deleted by Kafka's retention before the job read "
            f"them (partition: (next unread offset, first offset kept)): {lost}. Those records "
            f"are lost to the lake. {how}"
        )


def reset_offsets(state: TopicState, where: str) -> dict[int, int]:
    """The offsets a ``--reset-topic`` to ``earliest`` or ``latest`` moves the tables to."""
    if where not in ("earliest", "latest"):
        from stockpipe.errors import UnknownNameError

        raise UnknownNameError("topic reset", where, ["earliest", "latest"])
    return dict(state.first if where == "earliest" else state.end)
