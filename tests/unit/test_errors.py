"""Every error class says whether a retry helps, and the orchestration asks it."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

from stockpipe import errors
from stockpipe.errors import StockpipeError

LIB = Path(errors.__file__).parent
ERROR_CLASSES = [
    c
    for _, c in inspect.getmembers(errors, inspect.isclass)
    if issubclass(c, StockpipeError) and c.__module__ == errors.__name__
]


def test_errors_module_holds_every_error_class_of_the_library():
    """No public exception class elsewhere: ours by base, or any built-in exception's."""
    builtin = {
        n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
    }
    names = {c.__name__ for c in ERROR_CLASSES} | builtin
    elsewhere = [
        f"{path.relative_to(LIB)}: {node.name}"
        for path in LIB.rglob("*.py")
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and any(isinstance(b, ast.Name) and b.id in names for b in node.bases)
    ]
    assert not elsewhere


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_states_its_own_retry_meaning(cls):
    assert "retryable" in vars(cls), f"{cls.__name__} must set retryable in its own body"
    assert isinstance(cls.retryable, bool) and isinstance(cls.skip, bool)
    assert not (cls.skip and cls.retryable)  # nothing to do is nothing to retry either


@pytest.mark.parametrize(
    "name",
    [
        "NothingNewError",
        "UnknownNameError",
        "ConfigError",
        "MissingToolError",
        "LeaseHeldError",
        "RateLimitError",
        "TopicResetError",
        "RetentionTooShortError",
        "SecretParameterError",
        "ConcurrentExportError",
        "CsvFormatError",
        "FrameError",
        "ParameterError",
        "MissingColumnsError",
    ],
)
def test_the_orchestration_decides_as_the_error_class_says(name):
    from stockpipe.orchestration import outcome

    cls = getattr(errors, name)
    assert outcome(name) == ("skip" if cls.skip else "retry" if cls.retryable else "fail")


def test_code_errors_fail_and_unknown_names_are_retried():
    from stockpipe.orchestration import outcome

    for name in ("NameError", "SyntaxError", "TypeError", "IndentationError", "UnboundLocalError"):
        assert outcome(name) == "fail", name
    assert outcome("PapermillMissingParameterException") == "fail"
    assert outcome("NothingNewError") == "skip"
    for name in ("RuntimeError", "Py4JJavaError", "ConnectionError", "NoSuchError"):
        assert outcome(name) == "retry", name


def test_a_parameter_error_names_the_parameter_the_value_and_what_it_takes():
    from stockpipe.orchestration import outcome

    exc = errors.ParameterError("interval", "2x", "a bar interval", use="1d, 1h, 5m or 1m")
    assert str(exc) == "parameter `interval`: '2x' is not a bar interval (use 1d, 1h, 5m or 1m)"
    assert (exc.parameter, exc.value, exc.expected) == ("interval", "2x", "a bar interval")
    assert isinstance(exc, ValueError) and outcome("ParameterError") == "fail"
    assert (
        str(errors.ParameterError("rate", 0, "positive")) == "parameter `rate`: 0 is not positive"
    )


def test_an_unknown_name_is_a_parameter_error_that_lists_the_allowed():
    exc = errors.UnknownNameError("source", "nosuch", ["yahoo", "csv"])
    assert isinstance(exc, errors.ParameterError) and isinstance(exc, ValueError)
    assert str(exc) == "unknown source 'nosuch'; choose one of: csv, yahoo"
    assert (exc.parameter, exc.value, exc.name, exc.allowed) == (
        "source",
        "nosuch",
        "nosuch",
        ["yahoo", "csv"],
    )
