"""A tiny document model for the report, rendered to self-contained HTML and to Markdown.

The report is a list of blocks; the HTML renderer embeds figures as base64 PNG data URIs and carries its
own CSS (no external asset, font or script), the Markdown renderer writes figures as PNG files next to
it. All text is escaped: no block can inject markup.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Para:
    text: str
    kind: str = ""  # "", "note", "verdict-ok", "verdict-warn"


@dataclass
class Bullets:
    items: Sequence[str]
    kind: str = ""


@dataclass
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    highlight: int | None = None  # row index to emphasise


@dataclass
class Figure:
    name: str
    png: bytes
    caption: str
    wide: bool = False


@dataclass
class FigureGrid:
    figures: Sequence[Figure]


@dataclass
class Card:
    label: str
    value: str
    detail: str = ""


@dataclass
class Header:
    title: str
    subtitle: str
    cards: Sequence[Card] = field(default_factory=list)


Block = Heading | Para | Bullets | Table | FigureGrid | Header

CSS = """
:root{--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--accent:#2563eb;--ok:#065f46;--warn:#92400e}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 60px}
header.hero{background:linear-gradient(135deg,#1e3a8a,#2563eb 60%,#0891b2);color:#fff;border-radius:14px;
padding:26px 28px;box-shadow:0 6px 24px rgba(30,58,138,.25)}
header.hero h1{margin:0 0 4px;font-size:26px;letter-spacing:-.01em}
header.hero p{margin:0;opacity:.9}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin-top:18px}
.card{background:rgba(255,255,255,.13);border:1px solid rgba(255,255,255,.25);border-radius:10px;padding:12px 14px}
.card .label{font-size:11px;text-transform:uppercase;letter-spacing:.06em;opacity:.85}
.card .value{font-size:20px;font-weight:650;margin-top:2px}
.card .detail{font-size:12px;opacity:.85}
h2{font-size:19px;margin:34px 0 10px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:22px 0 8px}
p.note{color:var(--muted);font-size:12.5px}
p.verdict-ok,p.verdict-warn,ul.verdict{border-radius:10px;padding:12px 16px;background:#fff;border:1px solid var(--line)}
p.verdict-warn{border-left:5px solid #d97706}
p.verdict-ok{border-left:5px solid #059669}
ul.verdict{list-style:none;border-left:5px solid var(--accent)}
ul.verdict li{margin:4px 0}
.tablewrap{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:10px;margin:10px 0}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid var(--line)}
th,td:first-child{white-space:nowrap}
th{background:#f1f5f9;font-weight:600;color:#374151}
tr:nth-child(even) td{background:#fafbfc}
tr.hl td{background:#eff6ff;font-weight:600}
caption{caption-side:bottom;text-align:left;padding:8px 10px;color:var(--muted);font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px;margin:12px 0}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px}
figure.wide{grid-column:1/-1}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:var(--muted);font-size:12px;margin-top:6px}
footer{margin-top:40px;color:var(--muted);font-size:12px}
"""


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_block(b: Block) -> str:
    if isinstance(b, Header):
        cards = "".join(
            f'<div class="card"><div class="label">{_e(c.label)}</div><div class="value">{_e(c.value)}</div>'
            f'<div class="detail">{_e(c.detail)}</div></div>'
            for c in b.cards
        )
        return (
            f'<header class="hero"><h1>{_e(b.title)}</h1><p>{_e(b.subtitle)}</p>'
            f'<div class="cards">{cards}</div></header>'
        )
    if isinstance(b, Heading):
        anchor = f' id="{_e(b.anchor)}"' if b.anchor else ""
        return f"<h{b.level}{anchor}>{_e(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        cls = f' class="{_e(b.kind)}"' if b.kind else ""
        return f"<p{cls}>{_e(b.text)}</p>"
    if isinstance(b, Bullets):
        cls = f' class="{_e(b.kind)}"' if b.kind else ""
        return f"<ul{cls}>" + "".join(f"<li>{_e(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{_e(h)}</th>" for h in b.headers)
        body = "".join(
            f"<tr{' class=hl' if i == b.highlight else ''}>"
            + "".join(f"<td>{_e(c)}</td>" for c in r)
            + "</tr>"
            for i, r in enumerate(b.rows)
        )
        cap = f"<caption>{_e(b.caption)}</caption>" if b.caption else ""
        return f'<div class="tablewrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if isinstance(b, FigureGrid):
        figs = "".join(
            f'<figure{" class=wide" if f.wide else ""}><img alt="{_e(f.caption)}" '
            f'src="data:image/png;base64,{base64.b64encode(f.png).decode()}"><figcaption>{_e(f.caption)}'
            "</figcaption></figure>"
            for f in b.figures
        )
        return f'<div class="grid">{figs}</div>'
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(title: str, blocks: Sequence[Block], footer: str = "") -> str:
    """One self-contained HTML page (inline CSS, figures as data URIs, no scripts)."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
        f"<footer>{_e(footer)}</footer>\n</main></body></html>\n"
    )


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], figure_dir: Path, footer: str = "") -> str:
    """Markdown of the same blocks; figures are written to ``figure_dir`` and linked relatively."""
    figure_dir.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Header):
            out += [f"# {b.title}", "", b.subtitle, ""]
            out += [f"- **{c.label}:** {c.value}" + (f" ({c.detail})" if c.detail else "") for c in b.cards]
        elif isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(
                f"> {b.text}" if b.kind.startswith("verdict") else (f"_{b.text}_" if b.kind else b.text)
            )
        elif isinstance(b, Bullets):
            out += [f"- {i}" for i in b.items]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
            if b.caption:
                out += ["", f"_{b.caption}_"]
        elif isinstance(b, FigureGrid):
            for f in b.figures:
                (figure_dir / f"{f.name}.png").write_bytes(f.png)
                out += [f"![{f.caption}]({figure_dir.name}/{f.name}.png)", "", f"_{f.caption}_", ""]
        out.append("")
    if footer:
        out.append(f"_{footer}_")
    return "\n".join(out).rstrip() + "\n"
