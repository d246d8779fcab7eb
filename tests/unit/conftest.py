"""Unit-test fixtures: one plain local SparkSession, no connector jars, no services."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from stockpipe.config import load_settings
from stockpipe.errors import SetupError
from stockpipe.spark.jvm import archive_options, connector_jars


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """A small local session in UTC, shared by every unit test (start-up costs seconds)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # This JVM is reused by the integration tests' session in the same pytest run;
    # a class path is fixed at JVM launch, so the connector jars go on it now.
    settings = load_settings()
    try:
        jars = [str(p) for p in connector_jars(settings)]
    except SetupError:  # unit tests alone need no setup
        jars = []
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.extraClassPath", os.pathsep.join(jars))
        .config("spark.driver.extraJavaOptions", archive_options(settings))  # the class archive
        .appName("stockpipe-unit")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
