"""The README's snippets for reading the lake run, and give what stockpipe's reader gives."""

from __future__ import annotations

import re
import uuid

import pytest

from stockpipe.config import PROJECT_ROOT
from stockpipe.ingest import ingest
from stockpipe.kafka import ensure_topics
from stockpipe.reader import read_bars
from stockpipe.spark.batch import run_batch_job
from stockpipe.stack.minio_access import provision_bucket

pytestmark = pytest.mark.integration


def readme_snippets(section: str) -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_the_readers_in_the_readme_read_the_lake(settings, spark):
    run = uuid.uuid4().hex[:8]
    lake = settings.model_copy(update={"bucket": f"readme-{run}", "topic_bars": f"bars.{run}"})
    provision_bucket(lake)
    ensure_topics(lake, [lake.topic_bars], partitions=3)
    ingest(lake, "samples", "MSFT,GOOG", start="2014-01-01", end="2015-12-31", progress=False)
    run_batch_job(lake, spark=spark)

    snippets = readme_snippets("Reading the lake")
    assert len(snippets) == 4
    namespace: dict = {}
    for code in snippets:
        # the snippets read the settings from the environment: give them the test lake
        exec(
            code.replace("settings = get_settings()", "settings = lake"),
            {"lake": lake} | namespace,
            namespace,
        )

    expected = read_bars(lake, "MSFT")
    msft = namespace["msft"].to_pandas().sort_values("ts").reset_index(drop=True)
    assert msft["close"].tolist() == expected["close"].tolist()
    per_year = namespace["per_year"]
    assert per_year["bars"].sum() == len(read_bars(lake, None))
    assert set(per_year["year"]) == {2014, 2015}
    assert namespace["spark_bars"].count() == len(read_bars(lake, None))


def test_the_warehouse_query_in_the_readme_reads_the_exported_bars(settings, spark):
    from stockpipe.warehouse.export import export

    run = uuid.uuid4().hex[:8]
    lake = settings.model_copy(
        update={
            "bucket": f"readme-{run}",
            "topic_bars": f"bars.{run}",
            "warehouse_schema": f"r_{run}",
        }
    )
    provision_bucket(lake)
    ensure_topics(lake, [lake.topic_bars], partitions=3)
    ingest(lake, "samples", "MSFT,GOOG", start="2014-01-01", end="2014-12-31", progress=False)
    run_batch_job(lake, spark=spark)
    export(lake, "bars")

    [code] = readme_snippets("The warehouse export")
    namespace: dict = {}
    code = code.replace("settings = get_settings()", "settings = lake")
    exec(code.replace("FROM stockpipe.bars", f"FROM r_{run}.bars"), {"lake": lake}, namespace)
    per_symbol = namespace["per_symbol"].set_index("symbol")
    bars = read_bars(lake, None)
    assert per_symbol["bars"].to_dict() == bars.groupby("symbol").size().to_dict()
    assert per_symbol.loc["MSFT", "last"] == bars[bars.symbol == "MSFT"]["ts"].max()
