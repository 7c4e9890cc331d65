"""HTML renderer: one self-contained page (inline CSS and PNGs, no network, no scripts).

Findings come first with their fixes, then one section per report kind. Each kind may
register a section builder with ``@html_section(kind)`` (in its ``report/_<kind>.py``);
kinds without one get a generic rendering of their JSON payload.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..findings import Finding
from ..results.base import ReportBase

#: The page's ``<meta name="generator">``: how a later run knows the file is a report of ours.
HTML_GENERATOR = f"convdoctor {__version__}"
#: kind -> function(report) -> HTML fragment (already escaped).
HTML_SECTIONS: dict[str, Callable[[Any], str]] = {}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c0cc;font-size:14px}main{padding:20px 32px;max-width:1200px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px;margin:0 0 20px}
h2{font-size:18px;margin:0 0 12px}h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #e6e8ec;text-align:left}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.finding{border-left:5px solid #999;padding:8px 12px;margin:8px 0;background:#fafbfc;border-radius:4px}
.finding.error{border-color:#d6336c}.finding.warning{border-color:#f59f00}.finding.info{border-color:#1c7ed6}
.sev{font-weight:700;text-transform:uppercase;font-size:11px;margin-right:8px}
.error .sev{color:#d6336c}.warning .sev{color:#e67700}.info .sev{color:#1c7ed6}
.fix{margin-top:4px}.fix b{color:#2b8a3e}code{background:#eef0f3;padding:1px 4px;border-radius:3px}
img{max-width:100%;height:auto}.ok{color:#2b8a3e;font-weight:600}details{margin-top:4px;font-size:12px}
"""


def html_section(kind: str) -> Callable[[Callable[[Any], str]], Callable[[Any], str]]:
    """Register the HTML body builder of one report kind."""

    def deco(fn: Callable[[Any], str]) -> Callable[[Any], str]:
        if kind in HTML_SECTIONS:
            raise ValueError(f"HTML section for {kind!r} already registered")
        HTML_SECTIONS[kind] = fn
        return fn

    return deco


def esc(value: object) -> str:
    """HTML-escape any value's string form."""
    return html.escape(str(value), quote=True)


def png_img(png: bytes, alt: str) -> str:
    """An inline ``<img>`` from PNG bytes."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int] | None = None) -> str:
    """A plain table; columns in ``numeric`` are right-aligned."""
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def findings_section(findings: tuple[Finding, ...] | list[Finding]) -> str:
    """Every finding as a card: severity, code, where, message, fix, evidence."""
    if not findings:
        return '<section id="findings"><h2>Findings</h2><p class="ok">No findings.</p></section>'
    cards = []
    for f in findings:
        where = f" <code>{esc(f.where)}</code>" if f.where else ""
        evidence = table(["evidence", "value"], [[k, v] for k, v in f.evidence.items()]) if f.evidence else ""
        cards.append(
            f'<div class="finding {esc(f.severity.value)}"><span class="sev">{esc(f.severity.value)}</span>'
            f"<b>{esc(f.code)}</b> {esc(f.title)}{where}<div>{esc(f.message)}</div>"
            f'<div class="fix"><b>Fix:</b> {esc(f.fix)}</div>'
            + (f"<details><summary>evidence</summary>{evidence}</details>" if evidence else "")
            + "</div>"
        )
    return f'<section id="findings"><h2>Findings ({len(findings)})</h2>{"".join(cards)}</section>'


def generic_section(report: ReportBase) -> str:
    """The payload of a kind without a dedicated builder: scalars as a table, lists of rows as tables."""
    payload = report._payload()
    scalars = [[k, v] for k, v in payload.items() if not isinstance(v, (list, dict))]
    parts = [table(["what", "value"], scalars)] if scalars else []
    for key, value in payload.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            headers = list(value[0])
            parts.append(f"<h3>{esc(key)}</h3>" + table(headers, [[row.get(h, "") for h in headers] for row in value]))
        elif isinstance(value, dict) and value:
            parts.append(f"<h3>{esc(key)}</h3>" + table(["key", "value"], [[k, v] for k, v in value.items()]))
    return "".join(parts)


def body_section(report: ReportBase) -> str:
    """The kind's own section (dedicated builder or generic); a check report is its own sections."""
    from .terminal import _load_renderers

    _load_renderers()  # the _<kind>.py modules register HTML sections too
    builder = HTML_SECTIONS.get(report.kind, generic_section)
    if report.kind == "check":
        return builder(report)
    return f'<section id="{esc(report.kind)}"><h2>{esc(report.kind)}</h2>{builder(report)}</section>'


def page(title: str, subtitle: str, sections: list[str]) -> str:
    """A complete document around the given section fragments."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{HTML_GENERATOR}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<main>{''.join(sections)}</main></body></html>"
    )


def render(report: ReportBase) -> str:
    """One self-contained page: findings first, then the report's section."""
    return page(
        f"convdoctor {report.kind}: {report.model}",
        f"convdoctor {__version__}",
        [findings_section(report.findings), body_section(report)],
    )
