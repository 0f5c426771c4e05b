"""The report as a document (sections of text, tables and images) rendered twice: as
Markdown (``README.md``, images as PNG files beside it) and as one self-contained HTML page
(``index.html``: inline CSS, images as base64 data URIs, no JavaScript, no external URL).

Text takes two inline marks, ``**bold**`` and ```code```; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Bullets", "Document", "Image", "Section", "Table", "Text", "render_html",
           "render_markdown"]


@dataclass(frozen=True)
class Text:
    text: str
    kind: str = "p"  # "p", or "note" (small print), or "banner" (a warning across the top)


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # cells already formatted for people (strings)
    caption: str | None = None


@dataclass(frozen=True)
class Image:
    name: str  # file stem: written as <name>.png beside README.md
    png: bytes
    caption: str
    alt: str = ""
    half: bool = False  # in the page, two side by side


Block = Text | Bullets | Table | Image


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    sections: Sequence[Section]
    banner: str | None = None

    def images(self) -> list[Image]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Image)]


# -- Markdown ---------------------------------------------------------------------------------


def _md_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _looks_numeric(values: Sequence[str]) -> bool:
    pattern = re.compile(r"^[-+−]?[\d,.]+\s*(%|x|M|G|k|ms|s|MiB|KiB)?(\s*±.*)?$")
    cells = [v for v in values if v not in ("", "-")]
    return bool(cells) and all(pattern.match(v) for v in cells)


def _md_table(table: Table) -> str:
    frame = table.frame
    columns = [str(c) for c in frame.columns]
    rows = [[("" if pd.isna(v) else str(v)) if not isinstance(v, str) else v for v in r]
            for r in frame.itertuples(index=False, name=None)]
    align = ["---:" if _looks_numeric([r[i] for r in rows]) else "---"
             for i in range(len(columns))]
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    out = "\n".join(lines)
    return f"{out}\n\n*{table.caption}*" if table.caption else out


def render_markdown(doc: Document) -> str:
    """``README.md``: the same content, images referenced as ``<name>.png``."""
    out = [f"# {doc.title}", "", doc.subtitle, ""]
    if doc.banner:
        out += [f"> **{doc.banner}**", ""]
    for section in doc.sections:
        out += ["#" * section.level + f" {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                text = f"> **{block.text}**" if block.kind == "banner" else (
                    f"<sub>{block.text}</sub>" if block.kind == "note" else block.text)
                out += [text, ""]
            elif isinstance(block, Bullets):
                out += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                out += [_md_table(block), ""]
            else:
                out += [f"![{_md_cell(block.alt or block.caption)}]({block.name}.png)", "",
                        f"*{block.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


# -- HTML -------------------------------------------------------------------------------------

CSS = """
:root { --ink: #1d2329; --muted: #5b6670; --line: #d8dee4; --accent: #b3261e; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0; background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-top: 10px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p.subtitle { color: var(--muted); margin-top: 0; }
p.note { color: var(--muted); font-size: 13px; }
.banner { background: #fff4e5; border: 1px solid #f0b95a; padding: 10px 14px; border-radius: 6px;
          font-weight: 600; }
nav { font-size: 14px; margin: 14px 0 4px; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #0b5cad; text-decoration: none; white-space: nowrap; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", monospace; background: #f1f3f5;
       padding: 0 3px; border-radius: 3px; }
.table-wrap { overflow-x: auto; margin: 8px 0 4px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 9px; text-align: left;
         vertical-align: top; }
th { background: #f1f3f5; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:hover td { background: #fafbfc; }
td.confirmed { color: #1a7f37; font-weight: 600; }
td.not-confirmed { color: var(--accent); font-weight: 600; }
td.not-measured { color: var(--muted); font-style: italic; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 12.5px;
          padding-top: 4px; }
figure { margin: 14px 0 18px; }
figure img { width: 100%; max-width: 880px; height: auto; border: 1px solid var(--line);
             border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; }
figure.half { display: inline-block; vertical-align: top; width: calc(50% - 10px);
              margin-right: 6px; }
figure.half img { max-width: 100%; }
@media (max-width: 900px) { figure.half { width: 100%; } }
"""

_VERDICTS = {"confirmed": "confirmed", "not confirmed": "not-confirmed",
             "not measured": "not-measured"}


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _html_table(table: Table) -> str:
    frame = table.frame
    columns = [str(c) for c in frame.columns]
    rows = [["" if (not isinstance(v, str) and pd.isna(v)) else str(v) for v in r]
            for r in frame.itertuples(index=False, name=None)]
    numeric = [_looks_numeric([r[i] for r in rows]) for i in range(len(columns))]
    out = ['<div class="table-wrap"><table>']
    if table.caption:
        out.append(f"<caption>{_inline(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
               + "</tr></thead><tbody>")
    for r in rows:
        cells = []
        for i, value in enumerate(r):
            classes = ["num"] if numeric[i] else []
            if value in _VERDICTS:
                classes.append(_VERDICTS[value])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_inline(value)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(doc: Document) -> str:
    """``index.html``: one file with everything in it."""
    body = [f"<h1>{_inline(doc.title)}</h1>", f'<p class="subtitle">{_inline(doc.subtitle)}</p>']
    if doc.banner:
        body.append(f'<p class="banner">{_inline(doc.banner)}</p>')
    links = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in doc.sections
                    if s.level == 2)
    body.append(f"<nav>{links}</nav>")
    for section in doc.sections:
        tag = f"h{section.level}"
        body.append(f'<section id="{html.escape(section.id)}"><{tag}>'
                    f"{_inline(section.title)}</{tag}>")
        for block in section.blocks:
            if isinstance(block, Text):
                cls = {"note": ' class="note"', "banner": ' class="banner"'}.get(block.kind, "")
                body.append(f"<p{cls}>{_inline(block.text)}</p>")
            elif isinstance(block, Bullets):
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items)
                            + "</ul>")
            elif isinstance(block, Table):
                body.append(_html_table(block))
            else:
                alt = html.escape(block.alt or block.caption, quote=True)
                half = ' class="half"' if block.half else ""
                body.append(f'<figure id="fig-{html.escape(block.name)}"{half}>'
                            f'<img src="{_data_uri(block.png)}" alt="{alt}">'
                            f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        "<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
