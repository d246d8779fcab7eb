"""No bare built-in raise in lib: every error stockpipe raises says whether a retry helps.

The orchestration retries an error whose class it does not know (a service's, a
library's), so a ``raise ValueError(...)`` for a bad parameter would be retried
with the same input. Raise the fitting class of ``stockpipe.errors`` instead
(``ParameterError`` for a value no run can use).
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

from stockpipe import errors

LIB = Path(errors.__file__).parent

#: Built-in exceptions that are control flow, not errors: an abstract method,
#: Ctrl-C passed on, a command's exit, the end of an iteration.
CONTROL_FLOW = {
    "NotImplementedError",
    "KeyboardInterrupt",
    "SystemExit",
    "StopIteration",
    "StopAsyncIteration",
    "GeneratorExit",
}
BUILTIN_ERRORS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} - CONTROL_FLOW


def bare_raises() -> list[tuple[str, int, str]]:
    """(file under lib/stockpipe, line, class) of every ``raise <built-in error>``."""
    found = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue  # a bare ``raise`` re-raises what was caught
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                found.append((path.relative_to(LIB).as_posix(), node.lineno, exc.id))
    return sorted(found)


def test_lib_raises_no_bare_builtin_error():
    bare = [f"{f}:{line} raise {cls}" for f, line, cls in bare_raises()]
    assert not bare, "raise a class of stockpipe.errors instead:\n" + "\n".join(bare)


def test_the_check_finds_a_bare_raise(tmp_path, monkeypatch):
    module = tmp_path / "stockpipe"
    module.mkdir()
    (module / "bad.py").write_text(
        "def f(x):\n    if x:\n        raise ValueError('no')\n    raise KeyError\n"
    )
    (module / "fine.py").write_text(
        "from stockpipe.errors import ParameterError\n"
        "def g(x):\n"
        "    try:\n        return int(x)\n    except ValueError:\n        raise\n"
        "    raise NotImplementedError\n"
        "def h(x):\n    raise ParameterError('x', x, 'a number')\n"
    )
    monkeypatch.setitem(globals(), "LIB", module)
    assert bare_raises() == [("bad.py", 3, "ValueError"), ("bad.py", 4, "KeyError")]
