"""docs/validation.md lists every reason code and bound exactly as the contract has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockpipe import schemas as S

DOC = (Path(__file__).parents[2] / "docs" / "validation.md").read_text()


@pytest.mark.parametrize(
    ("section", "reasons"), [("## Bars", S.BAR_REASONS), ("## Ticks", S.TICK_REASONS)]
)
def test_every_reason_code_is_documented_with_its_meaning(section, reasons):
    body = DOC.split(section, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{code}` | {meaning} |" for code, meaning in reasons.items()]


def test_the_bounds_table_gives_the_contract_values():
    bounds = DOC.split("## Bounds", 1)[1].split("\n## ", 1)[0]
    for value in (
        f"{S.MIN_BAR_TS:%Y-%m-%d}",
        f"{S.FUTURE_SKEW_S} s",
        f"{S.MAX_PRICE:g}",
        f"{S.MAX_VOLUME:g}",
        f"{S.MAX_TICK_SIZE:g}",
        f"2^{S.SEQ_BITS} - 1",
        f"1-{S.MAX_SYMBOL_LENGTH} of `{S.SYMBOL_CHARS}`",
        f"{S.MAX_RECORD_BYTES} bytes",
    ):
        assert value in bounds, value
