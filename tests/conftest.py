"""Shared fixtures: an isolated local stack for integration tests.

The stack gets its own temp state directory, free ports, generated credentials
and bucket, so tests never touch a user's running stack. Child processes
(Papermill notebooks, Airflow) inherit the same settings through the environment.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockpipe.config import Settings
from stockpipe.stack.manager import Stack, isolated_settings

# tests/ on the path: the oracles (tests/oracles/) import as ``oracles.<module>``
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """A running isolated stack (Kafka, MinIO, PostgreSQL), stopped after the session.

    Its state directory is not under pytest's temp root: every pytest that starts on
    this machine makes that root 0700 again, which would lock out PostgreSQL (run as
    ``postgres`` when the tests run as root) while it starts.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="stockpipe-test-stack-"))
    settings = isolated_settings(state_dir)
    st = Stack(settings)
    saved = dict(os.environ)
    os.environ.update(settings.to_env())
    os.environ["STOCKPIPE_ENV_FILE"] = str(settings.state_dir / "no.env")
    try:
        st.up(log=lambda _msg: None)
        yield st
    finally:
        st.down(log=lambda _msg: None)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def own_state_root() -> Iterator[Path]:
    """A temp directory for a test's own stack, outside pytest's temp root (see ``stack``)."""
    path = Path(tempfile.mkdtemp(prefix="stockpipe-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def spark(settings: Settings):
    """A session of the test stack's Spark Connect server, as the jobs use it."""
    from stockpipe.spark.session import get_spark

    session = get_spark(settings, "stockpipe-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def stream_spark(settings: Settings):
    """A Spark driver in this process, pointed at the test stack: the streaming job's."""
    from pyspark import SparkContext

    from stockpipe.spark.session import driver_session

    active = SparkContext._active_spark_context
    endpoint = active and active.getConf().get("spark.hadoop.fs.s3a.endpoint", "")
    if active is not None and endpoint != settings.s3_url:
        active.stop()  # a plain unit-test session: no lake settings
    session = driver_session(settings, "stockpipe-tests-stream")
    yield session
    session.stop()
