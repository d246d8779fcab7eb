"""Where the batch job is in a topic: slices, the start of a run, and topic checks (no services)."""

from __future__ import annotations

import itertools

import pytest

from stockpipe.errors import TopicResetError
from stockpipe.offsets import TopicState, check_topic
from stockpipe.spark.batch import START_TABLES, Slice, plan_slices
from stockpipe.tables import TopicProgress, commit_metadata, parse_metadata

TOPIC = "stock.bars"


def state(raw=None, processed=None, first=None, end=None, topic_id="id-1") -> TopicState:
    def progress(offsets):
        return {} if offsets is None else {TOPIC: TopicProgress(offsets, "id-1")}

    return TopicState(
        TOPIC,
        topic_id,
        first or {0: 0, 1: 0},
        end or {0: 10, 1: 10},
        {"raw_bars": progress(raw), "processed_bars": progress(processed), "quarantine_bars": {}},
    )


def test_a_new_lake_starts_at_the_first_offsets_and_everything_is_pending():
    s = state(first={0: 3, 1: 0})
    assert s.start(START_TABLES) == {0: 3, 1: 0}
    assert s.pending(START_TABLES) == 7 + 10


def test_a_run_starts_where_the_table_furthest_behind_is():
    s = state(raw={0: 10, 1: 10}, processed={0: 4, 1: 10})
    assert s.start(START_TABLES) == {0: 4, 1: 10}
    assert s.pending(START_TABLES) == 6


def test_a_table_that_never_read_a_partition_is_at_its_first_offset():
    s = state(raw={0: 10}, processed={0: 10}, first={0: 0, 1: 2})
    assert s.start(START_TABLES) == {0: 10, 1: 2}
    assert s.pending(START_TABLES) == 8


def test_slices_cover_the_range_once_in_order_and_hold_the_limit():
    start, end = {0: 0, 1: 5, 2: 9}, {0: 100, 1: 55, 2: 9}
    slices = list(plan_slices(TOPIC, start, end, limit=40))
    assert [s.number for s in slices] == list(range(len(slices)))
    assert slices[0].start == start and slices[-1].end == end
    for a, b in itertools.pairwise(slices):
        assert a.end == b.start
    assert all(s.records <= 40 for s in slices)
    assert sum(s.records for s in slices) == 150
    assert list(plan_slices(TOPIC, end, end)) == []
    (whole,) = plan_slices(TOPIC, start, end)
    assert whole == Slice(0, TOPIC, start, end)


def test_a_topic_that_follows_on_passes():
    check_topic(state(raw={0: 10, 1: 4}, processed={0: 10, 1: 4}), START_TABLES, "stockpipe batch")


def test_a_recreated_topic_is_named_with_the_way_to_go_on():
    with pytest.raises(TopicResetError, match=r"deleted and created again.*--reset-topic"):
        check_topic(
            state(raw={0: 10, 1: 10}, processed={0: 10, 1: 10}, topic_id="id-2"),
            START_TABLES,
            "stockpipe batch",
        )


def test_a_topic_behind_the_lake_stops_the_job():
    with pytest.raises(
        TopicResetError, match=r"fewer records than raw/bars has read.*\{0: \(10, 3\)"
    ):
        check_topic(
            state(raw={0: 10, 1: 0}, processed={0: 10}, end={0: 3, 1: 3}),
            START_TABLES,
            "stockpipe batch",
        )


def test_records_lost_to_retention_are_reported_not_skipped():
    with pytest.raises(TopicResetError, match=r"retention.*\{1: \(2, 5\)\}"):
        check_topic(
            state(raw={0: 10, 1: 2}, processed={0: 10, 1: 2}, first={0: 0, 1: 5}),
            START_TABLES,
            "stockpipe batch",
        )


def test_commit_metadata_round_trips_and_ignores_foreign_metadata():
    progress = {TOPIC: TopicProgress({0: 5, 2: 7}, "abc"), "other": TopicProgress({0: 1})}
    meta = parse_metadata(commit_metadata(progress))
    assert meta is not None
    got = {t: TopicProgress.from_json(p) for t, p in meta["kafka"].items()}
    assert got == progress
    assert parse_metadata('{"note": "written by hand"}') is None
    assert parse_metadata("not json") is None
    assert parse_metadata(None) is None


def test_progress_moves_forward_only_and_keys_its_commits_by_epoch():
    held = TopicProgress({0: 10, 1: 4}, "id-1")
    moved = held.advanced({0: 8, 1: 9}, "id-1")  # a replay read less of partition 0
    assert moved.offsets == {0: 10, 1: 9}
    app, version = moved.transaction(TOPIC)
    assert (app, version) == ("stockpipe:kafka:stock.bars:id-1:0", 19)
    assert held.transaction(TOPIC)[1] < version  # a later commit, a higher version
    back = moved.reset({0: 0, 1: 0}, "id-1")  # a reset may go back: a key of its own
    assert back.offsets == {0: 0, 1: 0} and back.epoch == 1
    assert back.transaction(TOPIC)[0] != app
    assert TopicProgress.from_json(back.to_json()) == back
    assert TopicProgress.from_json({"offsets": {"0": 3}, "topic_id": "x"}).epoch == 0
