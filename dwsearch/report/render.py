"""The report as a document (sections of text, tables and images) rendered twice: as
Markdown (``README.md``, images as PNG files beside it) and as one self-contained HTML page
(``index.html``: inline CSS, images as base64 data URIs, no JavaScript, no external URL).

Text (paragraphs, bullet items, captions, the subtitle and the banner) is a small markup of
our own: ``**bold**``, ```code``` and ``\\X`` for a literal X. Everything that comes from a
study file, a storage or a user goes in through :func:`literal` (plain text) or :func:`code`
(a code span), so no mark in it acts; each renderer then escapes what its format would
interpret. Table cells, column names, the title and image alt texts are literal text, never
markup. In Markdown that means backslash escapes for what GitHub would read as HTML, a link,
emphasis, strikethrough, math or a table's cell border, line breaks as spaces, and code spans
fenced so that no backtick inside ends them; in HTML, ``html.escape``. Every piece of text in
both is passed through :func:`dwsearch.urls.mask_url` last, so no password in a URL (a storage
URL, one inside an error message) reaches a report file.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from dwsearch.urls import mask_url

__all__ = ["Bullets", "Document", "Image", "Section", "Table", "Text", "code", "literal",
           "render_html", "render_markdown"]


@dataclass(frozen=True)
class Text:
    text: str  # markup: **bold**, `code`, \X (use literal() and code() for data)
    kind: str = "p"  # "p", or "note" (small print), or "banner" (a warning across the top)


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]  # markup, as Text


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # cells already formatted for people (strings), literal text
    caption: str | None = None  # markup, as Text


@dataclass(frozen=True)
class Image:
    name: str  # file stem: written as <name>.png beside README.md
    png: bytes
    caption: str  # markup, as Text
    alt: str = ""  # literal text
    half: bool = False  # in the page, two side by side


Block = Text | Bullets | Table | Image


@dataclass(frozen=True)
class Section:
    id: str
    title: str  # markup (our own words)
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


@dataclass(frozen=True)
class Document:
    title: str  # literal text
    subtitle: str  # markup
    sections: Sequence[Section]
    banner: str | None = None  # markup

    def images(self) -> list[Image]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Image)]


# -- the markup -------------------------------------------------------------------------------


def literal(value: object) -> str:
    """``value`` as plain text inside markup: its ``*``, backticks and backslashes are text."""
    return re.sub(r"([\\`*])", r"\\\1", str(value))


def code(value: object) -> str:
    """``value`` as a code span inside markup (shown as given, in a monospace font)."""
    return "`" + re.sub(r"([\\`])", r"\\\1", str(value)) + "`"


def _parse(text: str) -> list[tuple[str, str]]:
    """Markup as tokens: ("text", s), ("code", s) and ("bold", "") for each ``**`` that
    opens or closes bold text (an unpaired one is text)."""
    tokens: list[tuple[str, str]] = []
    plain: list[str] = []

    def flush() -> None:
        if plain:
            tokens.append(("text", "".join(plain)))
            plain.clear()

    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n:
            plain.append(text[i + 1])
            i += 2
        elif char == "`":
            inner: list[str] = []
            j = i + 1
            while j < n and text[j] != "`":
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                inner.append(text[j])
                j += 1
            if j < n:  # closed
                flush()
                tokens.append(("code", "".join(inner)))
                i = j + 1
            else:
                plain.append(char)
                i += 1
        elif text.startswith("**", i):
            flush()
            tokens.append(("bold", ""))
            i += 2
        else:
            plain.append(char)
            i += 1
    flush()
    bolds = [k for k, (kind, _) in enumerate(tokens) if kind == "bold"]
    if len(bolds) % 2:  # the last ** has no partner: text
        tokens[bolds[-1]] = ("text", "**")
    return tokens


# -- Markdown ---------------------------------------------------------------------------------

# Characters of a line's text that GitHub would read as markup anywhere in a line: backslash,
# backtick, emphasis, HTML, a table's cell border.
_MD_ANYWHERE = re.compile(r"[\\`*<|]")
# '_' opens emphasis only at a word's edge ('seed_cnn' stays as it is); '&' only as an entity
# (&lt;); ']' only where a link or image would follow ('](' or '][').
_MD_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_MD_LINK = re.compile(r"\](?=[(\[])")
# Strikethrough (~x~) and math ($x$) need two in one line: '~70-75%' alone stays as it is.
_MD_PAIRED = "~$"
# At the start of a line: a heading, quote, list item, thematic break, task box or link
# definition.
_MD_LINE_START = re.compile(r"^([#>+=\-\[]|\d+(?=[.)]))")
_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")


def _one_line(text: str) -> str:
    return _BREAKS.sub(" ", mask_url(text)).replace("\0", "\ufffd")


def _md_text(text: str, *, context: str | None = None, start: bool = False,
             heading: bool = False, brackets: bool = False) -> str:
    """Literal ``text`` as Markdown that GitHub shows as exactly these characters, on one
    line. ``context``: all the text of its line (default: ``text``), for the marks that need
    a pair; ``start``: the text begins a line; ``heading``: it is in a heading; ``brackets``:
    it is inside brackets (an image's alt text)."""
    text = _one_line(text)
    paired = "".join(c for c in _MD_PAIRED if (context or text).count(c) >= 2)
    text = _MD_ANYWHERE.sub(lambda m: "\\" + m[0], text)
    for char in paired:
        text = text.replace(char, "\\" + char)
    text = _MD_EDGE_UNDERSCORE.sub(r"\\_", text)
    text = _MD_ENTITY.sub(r"\\&", text)
    if brackets:
        text = text.replace("[", "\\[").replace("]", "\\]")
    else:
        text = _MD_LINK.sub(r"\\]", text)
    if heading:
        text = text.replace("#", "\\#")
    if start:
        text = text.lstrip()
        match = _MD_LINE_START.match(text)
        if match:
            end = match.end()
            text = (text[:end] + "\\" + text[end:]) if match[1][0].isdigit() else "\\" + text
    return text


def _md_code(text: str) -> str:
    """``text`` as a Markdown code span: fenced by more backticks than any run inside it."""
    text = _one_line(text)
    if not text:
        return ""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if (text[0] == "`" or text[-1] == "`" or (
        text[0] == " " and text[-1] == " " and text.strip())) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_inline(markup: str, *, start: bool = False, heading: bool = False) -> str:
    tokens = _parse(markup)
    context = "".join(value for kind, value in tokens if kind == "text")
    out = []
    for index, (kind, value) in enumerate(tokens):
        if kind == "text":
            out.append(_md_text(value, context=context, start=start and index == 0,
                                heading=heading))
        elif kind == "code":
            out.append(_md_code(value))
        else:
            out.append("**")
    return "".join(out)


def _md_cell(value: object) -> str:
    return _md_text("" if value is None else str(value))


def _looks_numeric(values: Sequence[str]) -> bool:
    pattern = re.compile(r"^[-+−]?[\d,.]+\s*(%|x|M|G|k|ms|s|MiB|KiB)?(\s*±.*)?$")
    cells = [v for v in values if v not in ("", "-")]
    return bool(cells) and all(pattern.match(v) for v in cells)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    frame = table.frame
    columns = [str(c) for c in frame.columns]
    rows = [["" if (not isinstance(v, str) and pd.isna(v)) else str(v) for v in r]
            for r in frame.itertuples(index=False, name=None)]
    return columns, rows


def _md_table(table: Table) -> str:
    columns, rows = _cells(table)
    align = ["---:" if _looks_numeric([r[i] for r in rows]) else "---"
             for i in range(len(columns))]
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    out = "\n".join(lines)
    return f"{out}\n\n*{_md_inline(table.caption)}*" if table.caption else out


def render_markdown(doc: Document) -> str:
    """``README.md``: the same content, images referenced as ``<name>.png``."""
    out = [f"# {_md_text(doc.title, heading=True)}", "", _md_inline(doc.subtitle, start=True),
           ""]
    if doc.banner:
        out += [f"> **{_md_inline(doc.banner)}**", ""]
    for section in doc.sections:
        out += ["#" * section.level + f" {_md_inline(section.title, heading=True)}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                if block.kind == "banner":
                    text = f"> **{_md_inline(block.text)}**"
                elif block.kind == "note":
                    text = f"<sub>{_md_inline(block.text)}</sub>"
                else:
                    text = _md_inline(block.text, start=True)
                out += [text, ""]
            elif isinstance(block, Bullets):
                out += [f"- {_md_inline(item, start=True)}" for item in block.items] + [""]
            elif isinstance(block, Table):
                out += [_md_table(block), ""]
            else:
                alt = _md_text(block.alt or _plain(block.caption), brackets=True)
                out += [f"![{alt}]({block.name}.png)", "", f"*{_md_inline(block.caption)}*", ""]
    return "\n".join(out).rstrip() + "\n"


def _plain(markup: str) -> str:
    """Markup as the text it shows (for an alt text)."""
    return "".join(value for kind, value in _parse(markup) if kind != "bold")


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


def _escape(text: str) -> str:
    """Literal text for HTML (URLs masked)."""
    return html.escape(mask_url(text), quote=True)


def _inline(markup: str) -> str:
    out = []
    bold = False
    for kind, value in _parse(markup):
        if kind == "text":
            out.append(_escape(value))
        elif kind == "code":
            out.append(f"<code>{_escape(value)}</code>")
        else:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
    return "".join(out)


def _html_table(table: Table) -> str:
    columns, rows = _cells(table)
    numeric = [_looks_numeric([r[i] for r in rows]) for i in range(len(columns))]
    out = ['<div class="table-wrap"><table>']
    if table.caption:
        out.append(f"<caption>{_inline(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_escape(c)}</th>" for c in columns)
               + "</tr></thead><tbody>")
    for r in rows:
        cells = []
        for i, value in enumerate(r):
            classes = ["num"] if numeric[i] else []
            if value in _VERDICTS:
                classes.append(_VERDICTS[value])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_escape(value)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(doc: Document) -> str:
    """``index.html``: one file with everything in it."""
    body = [f"<h1>{_escape(doc.title)}</h1>", f'<p class="subtitle">{_inline(doc.subtitle)}</p>']
    if doc.banner:
        body.append(f'<p class="banner">{_inline(doc.banner)}</p>')
    links = "".join(f'<a href="#{_escape(s.id)}">{_escape(_plain(s.title))}</a>'
                    for s in doc.sections if s.level == 2)
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
                alt = _escape(block.alt or _plain(block.caption))
                half = ' class="half"' if block.half else ""
                body.append(f'<figure id="fig-{html.escape(block.name)}"{half}>'
                            f'<img src="{_data_uri(block.png)}" alt="{alt}">'
                            f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        "<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
