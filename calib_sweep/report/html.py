"""One self-contained HTML page: the tables and the figures (PNG embedded as base64 data URIs).

No script, no external stylesheet, font or image: the file opens offline in any browser.
"""

from __future__ import annotations

import base64
import datetime as _dt
from html import escape

from calib_sweep.report.aggregate import Summary
from calib_sweep.report.display import Table
from calib_sweep.report.figures import Figure

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.82rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f6; position: sticky; top: 0; }
td.text, th.text { text-align: left; } td.text { white-space: normal; }
tr.failed td { background: #fdecec; } tr.missing td { background: #fff7e0; } tr.superseded td { color: #888; }
.note { color: #555; font-size: 0.85rem; }
.counts span { display: inline-block; margin-right: 1rem; padding: 2px 8px; border-radius: 4px; background: #eef; }
.counts .failed { background: #fdecec; } .counts .missing { background: #fff7e0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; }
nav a { margin-right: 0.8rem; font-size: 0.85rem; }
.scroll { overflow-x: auto; }
"""


def _table(table: Table) -> str:
    text_columns = {i for i, h in enumerate(table.header) if h in ("method", "source", "model", "variant", "metric", "status",
                                                                     "folder", "error", "widest group")}
    head = "".join(f'<th class="text">{escape(h)}</th>' if i in text_columns else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(table.header))
    body = []
    for row in table.rows:
        css = f' class="{escape(row[0])}"' if table.anchor == "jobs" and row else ""
        cells = "".join(f'<td class="text">{escape(str(c))}</td>' if i in text_columns else f"<td>{escape(str(c))}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    parts = [f'<h2 id="{escape(table.anchor)}">{escape(table.title)}</h2>']
    if table.note:
        parts.append(f'<p class="note">{escape(table.note)}</p>')
    if table.rows:
        parts.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    return "\n".join(parts)


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure id="fig-{escape(figure.name)}"><img alt="{escape(figure.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(figure.title)}</figcaption></figure>")


def render_html(summary: Summary, tables: list[Table], figures: list[Figure], sources: list[str]) -> str:
    """The report page as one HTML string (UTF-8, no external resources)."""
    counts = summary.counts
    count_html = "".join(f'<span class="{s}">{counts.get(s, 0)} {s}</span>'
                         for s in ("ok", "failed", "missing", "superseded") if counts.get(s, 0) or s == "ok")
    main_tables = [t for t in tables if t.anchor.startswith(("main-", "spread-"))]
    other_tables = [t for t in tables if t not in main_tables]
    box = [f for f in figures if f.name.startswith("box_")]
    curves = [f for f in figures if f not in box]
    nav = [(t.anchor, t.title.split(":")[0]) for t in main_tables[:1]] + ([("box-plots", "Box plots")] if box else [])
    nav += [(t.anchor, t.title.split(":")[0]) for t in other_tables]
    nav += [("sample-size-curves", "Sample-size curves")] if curves else []
    sections = [_table(t) for t in main_tables]
    if box:
        sections.append('<h2 id="box-plots">Box plots: metrics across calibration sets, by method and source</h2>')
        sections.append('<p class="note">Each box: the calibration sets (seeds) of one method × source × size; '
                        "dots are single sets, the diamond is the mean.</p>")
        sections += [_figure(f) for f in box]
    for table in other_tables:
        sections.append(_table(table))
        if table.anchor == "sample-size" and curves:
            sections.append('<h2 id="sample-size-curves">Sample-size curves</h2>')
            sections += [_figure(f) for f in curves]
    if curves and not any(t.anchor == "sample-size" for t in other_tables):
        sections.append('<h2 id="sample-size-curves">Sample-size curves</h2>')
        sections += [_figure(f) for f in curves]
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Calibration-data sweep report</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Calibration-data sweep report</h1>
<p class="note">Sweep folders: {escape(", ".join(sources))} &middot; generated {generated}</p>
<p class="counts">{count_html}</p>
<p class="note">Statistics across calibration sets (seeds) of one model × method × source × size.
SD is the sample standard deviation (ddof=1); – marks an undefined figure (e.g. SD of one seed).
Accuracy in percent, perplexity in its own unit; the CSV files beside this page hold the raw values.</p>
<nav>{"".join(f'<a href="#{escape(a)}">{escape(t)}</a>' for a, t in nav)}</nav>
{chr(10).join(sections)}
</body>
</html>
"""
