"""The `stockpipe` command: one clean error line for a StockpipeError, whatever the command."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from stockpipe import cli
from stockpipe.errors import ConfigError, LeaseHeldError

#: Arguments a command needs to get as far as its settings.
ARGS = {"dag": ["x"], "lake history": ["processed_bars"], "ticks": ["--max-ticks", "1"]}


def _commands(group=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    group = group or typer.main.get_command(cli.app)
    paths = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            paths += _commands(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


COMMANDS = _commands()


def test_the_jobs_are_commands_of_the_one_cli():
    for path in [("batch",), ("stream",), ("ticks",), ("export",), ("lake", "maintain")]:
        assert path in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_a_stockpipe_error_of_any_command_is_one_red_line_and_exit_1(path, monkeypatch):
    def missing(*_a, **_kw):
        raise ConfigError("STOCKPIPE_TEST", "a test setting is missing.")

    for target in ("_settings", "load_settings"):
        monkeypatch.setattr(cli, target, missing)
    monkeypatch.setattr("stockpipe.config.get_settings", missing)
    monkeypatch.setattr("stockpipe.deploy.write_docker_env", missing)

    out = CliRunner().invoke(cli.app, [*path, *ARGS.get(" ".join(path), [])], color=True)
    assert out.exit_code == 1, out.output
    assert out.stderr.splitlines() == [
        typer.style(
            "error: a test setting is missing. Set STOCKPIPE_TEST in the environment or "
            "in the project's .env.",
            fg="red",
        )
    ]
    assert "Traceback" not in out.output


def test_the_streaming_job_held_off_by_another_job_exits_3(monkeypatch):
    from stockpipe.spark import streaming

    def held(*_a, **_kw):
        raise LeaseHeldError("processed/tick_windows", "streaming job t_first")

    monkeypatch.setattr("stockpipe.config.get_settings", lambda: None)
    monkeypatch.setattr(streaming, "run_stream", held)
    out = CliRunner().invoke(cli.app, ["stream", "--mode", "available-now"])
    assert out.exit_code == 3
    assert out.stderr.startswith("error: processed/tick_windows is being written by streaming job")


def test_a_bad_option_is_a_usage_error_and_a_bug_keeps_its_traceback(monkeypatch):
    out = CliRunner().invoke(cli.app, ["stream", "--mode", "sometimes"])
    assert out.exit_code == 2 and "unknown run mode 'sometimes'" in out.output
    monkeypatch.setattr(cli, "_settings", lambda: 1 / 0)
    out = CliRunner().invoke(cli.app, ["env"])
    assert isinstance(out.exception, ZeroDivisionError)  # not one of ours: not hidden


def test_python_dash_m_runs_the_same_commands():
    """Jobs start as `python -m stockpipe.cli <command>` (the runtime never imports the CLI)."""
    ticks = subprocess.run(
        [sys.executable, "-m", "stockpipe.cli", "ticks"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ticks.returncode == 2 and "give --duration or --max-ticks" in ticks.stderr
    stream = subprocess.run(
        [sys.executable, "-m", "stockpipe.cli", "stream", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stream.returncode == 0, stream.stderr
    assert "stockpipe stream" in stream.stdout and "--archive-trigger" in stream.stdout
