"""One self-contained HTML report from titled sections of figures.

plotly.js is inlined once in ``<head>`` and every figure is written without it, so
the file is a few MB whatever the figure count and opens offline: no CDN, no
external request.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from stockpipe.errors import ParameterError

Section = tuple[str, go.Figure | Sequence[go.Figure]]

#: Plotly config for every figure: no logo, resize with the page, PNG download.
PLOT_CONFIG: dict[str, object] = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; color: #222; }
header { border-bottom: 1px solid #ddd; margin-bottom: 16px; }
h1 { margin: 24px 0 4px; }
.subtitle { margin: 0 0 4px; font-size: 1.1em; color: #444; }
.generated { margin: 0 0 12px; color: #777; font-size: 0.9em; }
nav ol { padding-left: 20px; } nav ul { padding-left: 18px; margin: 2px 0; }
section { margin-top: 32px; }
.figure { margin: 12px 0 28px; }
.empty-section { color: #777; font-style: italic; }
"""


@cache
def _plotly_js() -> str:
    """The plotly.js bundle, guarded so it cannot close its own <script> element."""
    return get_plotlyjs().replace("</script", "<\\/script")


def _figures(item: go.Figure | Sequence[go.Figure], section: str) -> list[go.Figure]:
    figs = [item] if isinstance(item, go.Figure) else list(item)
    for fig in figs:
        if not isinstance(fig, go.Figure):
            raise ParameterError(
                f"sections[{section!r}]", fig, "a plotly Figure", use="go.Figure objects"
            )
    return figs


def _figure_title(fig: go.Figure, n: int) -> str:
    text = fig.layout.title.text if fig.layout.title else None
    return text or f"Figure {n}"


def _figure_html(fig: go.Figure, div_id: str) -> str:
    height = fig.layout.height or 480
    return pio.to_html(
        fig,
        config=PLOT_CONFIG,
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        default_width="100%",
        default_height=f"{height}px",
        div_id=div_id,
    )


def build_report(
    sections: Sequence[Section],
    title: str,
    subtitle: str = "",
    *,
    generated_at: datetime | None = None,
) -> str:
    """Return the report as one HTML document: heading, contents, one div per figure.

    ``generated_at`` defaults to now (UTC); tests pass a fixed time.
    """
    when = (generated_at or datetime.now(UTC)).astimezone(UTC)
    toc: list[str] = []
    body: list[str] = []
    n = 0
    for s, (name, item) in enumerate(sections, start=1):
        figs = _figures(item, name)
        sid = f"section-{s}"
        entries: list[str] = []
        parts = [f'<section id="{sid}">', f"<h2>{html.escape(name)}</h2>"]
        if not figs:
            parts.append('<p class="empty-section">No figures in this section.</p>')
        for fig in figs:
            n += 1
            fid = f"figure-{n}"
            entries.append(f'<li><a href="#{fid}">{html.escape(_figure_title(fig, n))}</a></li>')
            parts.append(f'<div class="figure" id="{fid}-box">{_figure_html(fig, fid)}</div>')
        parts.append("</section>")
        body.append("\n".join(parts))
        sub = f"<ul>{''.join(entries)}</ul>" if entries else ""
        toc.append(f'<li><a href="#{sid}">{html.escape(name)}</a>{sub}</li>')

    script = f'<script type="text/javascript">{_plotly_js()}</script>' if n else ""
    sub_html = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    figure_word = "figure" if n == 1 else "figures"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style>",
            script,
            "</head>",
            "<body>",
            "<header>",
            f"<h1>{html.escape(title)}</h1>",
            sub_html,
            f'<p class="generated">Generated {when:%Y-%m-%d %H:%M} UTC by stockpipe, '
            f"{n} {figure_word}.</p>",
            "</header>",
            f"<nav><h2>Contents</h2><ol>{''.join(toc)}</ol></nav>",
            "<main>",
            *body,
            "</main>",
            "</body>",
            "</html>",
        ]
    )
