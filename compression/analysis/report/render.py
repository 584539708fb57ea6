"""Rendering only: an `Analysis`'s sections, figures and text as Markdown (figures linked) and
as one self-contained HTML file (figures embedded), for the report and the autotune page."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterator
from pathlib import Path

from compression.analysis import tables
from compression.analysis.report.analysis import Analysis, Figure
from compression.training import quality

AUTOTUNE_PAGE = (("autotune",), "Autotune")  # its own page beside the report (same section)
TEXT_FIRST = {"autotune"}  # the winner and its command before the figures

SECTIONS = (("runs", "Runs"), ("autotune", "Autotune: the winner and its search"),
            ("sweet_spot", "Sweet spot"), ("curves", "Accuracy curves"),
            ("pareto", "Pareto fronts"), ("runtime", "Eager vs deployment runtime"),
            ("sensitivity", "Per-layer sensitivity"),
            ("layers", "Per-layer view of the chosen run"))


def _sections(a: Analysis, only: tuple[str, ...] | None = None
              ) -> Iterator[tuple[str, str, list[Figure]]]:
    """(key, title, figures) of each section that has figures or text, in report order (only
    the `only` ones when given)."""
    for key, title in SECTIONS:
        if only is not None and key not in only:
            continue
        figs = [f for f in a.figures.values() if f.section == key]
        if figs or key in a.text:
            yield key, title, figs


def _intro(a: Analysis) -> str:
    return quality.relabel(f"Selection: `{a.opts.out.name}`; tolerance "
                           f"{tables.points(a.opts.tolerance, a.metric)}; "
                           f"sweet spot by {a.opts.by}.",
                           a.metric)


def render_markdown(a: Analysis, url: Callable[[str], str] = str,
                    only: tuple[str, ...] | None = None, heading: str = "Compression analysis"
                    ) -> str:
    """The report as Markdown; `url` maps a file's path relative to the output folder to the
    address the figures and links use (default: that relative path); `only`: those sections
    (a page of its own)."""
    out = [f"# {heading}", _intro(a)]
    for key, title, figs in _sections(a, only):
        out.append(f"## {title}")
        if key in TEXT_FIRST and key in a.text:
            out.append(quality.relabel(a.text[key], a.metric))
        for f in figs:
            rel = {p.suffix[1:]: url(p.relative_to(a.opts.out).as_posix()) for p in f.paths}
            links = ", ".join(f"[{ext}]({r})" for ext, r in rel.items())
            img = rel.get("png") or next(iter(rel.values()))
            out.append(f"![{f.caption}]({img})\n\n*{f.caption}* ({links})")
        if key in a.text and key not in TEXT_FIRST:
            out.append(quality.relabel(a.text[key], a.metric))
    return "\n\n".join(out) + "\n"


def _data_uri(paths: list[Path]) -> str | None:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return None
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _img_tag(paths: list[Path], caption: str) -> str:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def md_to_html(text: str) -> str:
    """Markdown (tables, lists, code) to HTML; raw HTML in the text is escaped, not kept."""
    import markdown

    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"],
                             output_format="html")


def render_html(a: Analysis, only: tuple[str, ...] | None = None,
                heading: str = "Compression analysis") -> str:
    """The same content with real tables, figures embedded as data URIs: one file to mail."""
    body = [f"<h1>{html.escape(heading)}</h1>", md_to_html(_intro(a))]
    for key, title, figs in _sections(a, only):
        body.append(f"<h2>{html.escape(title)}</h2>")
        text = (f"<div class='section'>{md_to_html(quality.relabel(a.text[key], a.metric))}"
                "</div>" if key in a.text else "")
        figures = [_img_tag(f.paths, f.caption) for f in figs]
        body += [text, *figures] if key in TEXT_FIRST else [*figures, text]
    style = ("body{font-family:sans-serif;max-width:1250px;margin:auto;padding:0 12px}"
             "img{max-width:100%}table{border-collapse:collapse;font-size:13px;margin:8px 0}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f0f0f0}td:first-child,td:nth-child(2),td:nth-child(3)"
             "{text-align:left}.section{overflow-x:auto}figcaption{font-style:italic}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(heading)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
