"""Every relative link in README.md and docs/*.md points at a file of the checkout, and
every ``#anchor`` at a heading of the file it names (GitHub's heading ids)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    return CODE.sub("", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The ids GitHub gives the headings: lower case, punctuation dropped, spaces to '-'."""
    seen: dict[str, int] = {}
    out = set()
    for title in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links_in(text: str) -> list[str]:
    """Link and image targets of the prose, except URLs with a scheme (https:, mailto:)."""
    return [t for t in LINK.findall(prose(text)) if not re.match(r"[a-z]+:", t)]


def links(doc: Path) -> list[str]:
    return links_in(doc.read_text())


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in links(doc):
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.is_file() or not file.is_relative_to(root):
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert broken_links(doc) == []


def test_the_checker_finds_broken_links_and_skips_code(tmp_path):
    assert "docs/report.png" in links(ROOT / "README.md")
    (tmp_path / "b.md").write_text("## A heading\n")
    doc = tmp_path / "a.md"
    doc.write_text(
        "# Top\n[ok](b.md#a-heading) [self](#top) [web](https://example.com)\n"
        "[gone](c.md) [bad](b.md#nope) `[code](d.md)`\n```\n[block](e.md)\n```\n"
    )
    assert broken_links(doc, tmp_path) == [
        "c.md: no such file",
        "b.md#nope: no heading #nope in b.md",
    ]


def test_the_anchor_rule_is_githubs():
    text = (
        "## Orchestration (Airflow + Papermill)\n### Resetting a topic\n## `make demo`\n## A\n## A"
    )
    assert anchors(text) == {
        "orchestration-airflow--papermill",
        "resetting-a-topic",
        "make-demo",
        "a",
        "a-1",
    }
