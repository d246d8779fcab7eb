"""The demo's progress lines come from `airflow dags test` output as Airflow 3.3 prints it."""

from __future__ import annotations

from stockpipe.demo import _progress

# Two lines as `airflow dags test` 3.3 prints them (structlog, trimmed).
START = (
    "2026-11-26T04:44:20.272257Z [info     ] [DAG TEST] starting task_id=check_stack "
    "map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501"
)
END = (
    "2026-11-26T04:44:51.909610Z [info     ] [DAG TEST] end task task_id=check_stack "
    "map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563"
)


def test_progress_prints_one_line_per_task_start_and_end_and_nothing_else():
    printed: list[str] = []
    on_line = _progress(printed.append)
    on_line("2026-11-26T04:44:01Z [info     ] Filling up the DagBag from /work/main/dags")
    on_line(START)
    on_line("2026-11-26T04:44:51Z [info     ] Done. Returned value was: {...}")
    on_line(END)
    assert printed[0] == "    check_stack: running"
    assert printed[1].startswith("    check_stack: finished (")
    assert len(printed) == 2


def test_the_live_session_hands_its_tick_source_to_the_producer_notebook(tmp_path):
    from stockpipe.config import Settings
    from stockpipe.demo import LiveSession

    live = LiveSession(
        Settings(_env_file=None), duration_s=30, logs_dir=tmp_path, symbols="MSFT", source="yahoo"
    )
    assert live.jobs["stream_producer"]["source"] == "yahoo"
    assert live.jobs["stream_producer"]["symbols"] == "MSFT"
    assert (
        LiveSession(Settings(_env_file=None), duration_s=30, logs_dir=tmp_path).jobs[
            "stream_producer"
        ]["source"]
        == "synthetic"
    )
