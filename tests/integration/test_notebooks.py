"""The batch notebooks under Papermill against the test stack: producer -> Spark -> charts."""

from __future__ import annotations

import uuid
from pathlib import Path

import papermill as pm
import pytest

from stockpipe.kafka import ensure_topics, read_all
from stockpipe.lake import filesystem
from stockpipe.reader import read_bars
from stockpipe.stack.minio_access import provision_bucket

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run(name: str, out_dir: Path, **params) -> dict:
    return pm.execute_notebook(
        str(NOTEBOOKS / name),
        str(out_dir / name),
        parameters=params,
        kernel_name="stockpipe",
        cwd=str(out_dir),
        progress_bar=False,
    )


def outputs_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_batch_notebooks_produce_process_and_chart(settings, tmp_path, monkeypatch):
    run_id = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"bucket": f"nb-{run_id}", "topic_bars": f"nb.bars.{run_id}"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars])
    monkeypatch.setenv("STOCKPIPE_BUCKET", s.bucket)  # the kernels read settings from the env
    monkeypatch.setenv("STOCKPIPE_TOPIC_BARS", s.topic_bars)

    nb = run(
        "batch_producer.ipynb",
        tmp_path,
        source="samples",
        symbols="MSFT,GOOG",
        start="2013-01-01",
        end="2013-06-30",
    )
    consumed = list(read_all(s, s.topic_bars))
    assert len(consumed) > 100
    assert f"{len(consumed)} confirmed on {s.topic_bars}" in outputs_text(nb)

    nb = run("spark_batch.ipynb", tmp_path)
    text = outputs_text(nb)
    assert f"{len(consumed)} records read from {s.topic_bars}" in text
    processed = read_bars(s, None)
    assert len(processed) == len(consumed)  # samples are clean: nothing quarantined

    monkeypatch.setenv("STOCKPIPE_WAREHOUSE_SCHEMA", f"nb_{run_id}")
    nb = run("export.ipynb", tmp_path, tables="bars")
    text = outputs_text(nb)
    assert "bars <- processed/bars: full export of version" in text
    assert f"{len(consumed)} staged, {len(consumed)} written" in text
    assert "postgresql://stockpipe@127.0.0.1:" in text  # the BI tool's URL, no password
    assert "GOOG" in text and "MSFT" in text  # the notebook's query of the warehouse

    nb = run("charts.ipynb", tmp_path, symbols="MSFT,GOOG", output_dir=str(tmp_path / "reports"))
    local = list((tmp_path / "reports").rglob("*.html"))
    assert len(local) == 1
    remote = filesystem(s).find(f"{s.bucket}/reports")
    assert len(remote) == 1 and remote[0].endswith(local[0].name)
    html = local[0].read_text()
    assert filesystem(s).cat(remote[0]).decode() == html
    assert html.count('class="plotly-graph-div"') >= 8
    secrets = (s.s3_secret_key.get_secret_value(), s.postgres_password.get_secret_value())
    for executed in tmp_path.glob("*.ipynb"):
        for secret in secrets:
            assert secret not in executed.read_text(), f"{executed.name} leaks a secret"
