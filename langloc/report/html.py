"""One self-contained HTML page for an analysis: ``langloc report PATH... -o report.html``.

The page needs nothing but itself: plots are inline SVG (text kept as text, so it stays
searchable) or, where a plot cannot be redrawn from the files, the study's PNG as a data URI;
styling and the few lines of script that sort tables are inline; there is no URL anywhere
that a browser would load (``external_references`` finds any; a test checks it).

Sections come from :mod:`langloc.report.sections`, one per output found under the folders
(:mod:`langloc.report.discover`), after an overview of models, corpora and outputs.
"""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable


# ---------------------------------------------------------------------------------------------
# Pieces of a page


def esc(value) -> str:
    """Text for the page. A URL in the text (a model's output, a corpus spec) is written with
    its slashes as entities: it reads the same, and the file holds no URL at all."""
    return html.escape(str(value), quote=True).replace("://", ":&#47;&#47;")


def fmt(value) -> str:
    """A cell: numbers with four significant digits, empty and missing values as a dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def number(value) -> float | None:
    """``value`` as a float if it is one (CSV cells are strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def cell(value) -> str:
    """A table cell; numbers carry their value for sorting."""
    v = number(value)
    if isinstance(value, str) and v is not None:
        shown = value if value.lstrip("-").isdigit() else fmt(v)  # CSV cells: integers as written
    else:
        shown = fmt(value)
    sort = f' data-v="{v!r}"' if v is not None and math.isfinite(v) else ""
    return f"<td{sort}{' class=num' if v is not None else ''}>{esc(shown)}</td>"


def table(rows: list[dict], columns: list[str] | None = None, headers: dict[str, str] | None = None,
          limit: int | None = None, caption: str | None = None) -> str:
    """A sortable table of ``rows`` (dicts); ``limit``: show the first rows and say how many."""
    if not rows:
        return "<p class=muted>(no rows)</p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    headers = headers or {}
    shown = rows[:limit] if limit else rows
    head = "".join(f"<th title='sort'>{esc(headers.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>" for r in shown)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    more = (f"<p class=muted>first {len(shown)} of {len(rows)} rows; the file has all of them</p>"
            if len(shown) < len(rows) else "")
    return f"<div class=scroll><table class=sortable>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}"


def facts(items: dict) -> str:
    """A two-column list of facts (nested values shown compactly)."""
    rows = []
    for k, v in items.items():
        if v is None or v == {} or v == []:
            continue
        shown = fmt(v) if not isinstance(v, dict) else "; ".join(f"{a}: {fmt(b)}" for a, b in v.items())
        rows.append(f"<tr><th>{esc(k)}</th><td>{esc(shown)}</td></tr>")
    return f"<table class=facts>{''.join(rows)}</table>" if rows else ""


def details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def command_line(command: str | None, made_by: str) -> str:
    """The command that reproduces a figure or table (the manifest's ``command``)."""
    if command:
        return f"<p class=cmd>reproduce: <code>{esc(command)}</code></p>"
    return (f"<p class=cmd>made by <code>{esc(made_by)}</code> (this file does not record its command line: "
            f"it was written before manifests)</p>")


def figure(image: str, caption: str, command: str | None, made_by: str) -> str:
    """A figure (inline SVG or <img>) with its caption and the command that reproduces it."""
    return (f"<figure><div class=plot>{image}</div><figcaption>{esc(caption)}"
            f"{command_line(command, made_by)}</figcaption></figure>")


# ---------------------------------------------------------------------------------------------
# Plots: inline SVG from the plot functions of langloc.plotting, or a PNG as a data URI

_counter = {"n": 0}  # figures drawn so far in this page: prefixes their SVG ids


def reset_ids() -> None:
    _counter["n"] = 0


def clean_svg(text: str, prefix: str) -> str:
    """Matplotlib's SVG made fit to inline: no XML prolog, DOCTYPE or metadata (they name
    URLs), no namespace declarations (the HTML parser puts <svg> in its namespace), and ids
    prefixed so that two figures never share one."""
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=0)
    ids = set(re.findall(r'\sid="([^"]+)"', text))
    if ids:
        pat = re.compile(r'(\sid="|url\(#|href="#)(' + "|".join(map(re.escape, sorted(ids, key=len, reverse=True))) + r')(?=["\)])')
        text = pat.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", text)
    return text.strip()


def svg(plot: Callable, *args, **kwargs) -> str:
    """Run a plot function of :mod:`langloc.plotting` (it takes the output path as its
    second argument) into inline SVG, text kept as text."""
    import matplotlib

    with tempfile.TemporaryDirectory() as tmp, matplotlib.rc_context(
            {"svg.fonttype": "none", "svg.hashsalt": "langloc"}):
        path = Path(tmp) / "figure.svg"
        plot(args[0], path, *args[1:], **kwargs)
        text = path.read_text(encoding="utf-8")
    _counter["n"] += 1
    return clean_svg(text, f"f{_counter['n']}-")


def png(path: Path, alt: str) -> str:
    """A PNG the study wrote, as a data URI (for plots that cannot be redrawn from the files)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


# ---------------------------------------------------------------------------------------------
# No external URLs

_REFERENCE = re.compile(r"""(?:\b(?:src|href|xlink:href|action|poster|data|srcset)\s*=\s*["']?\s*|url\(\s*["']?|@import\s+["']?)"""
                        r"""([^"'\s)>]+)""", re.I)


def external_references(page: str) -> list[str]:
    """Every reference in ``page`` that a browser would fetch from elsewhere: anything in a
    src/href/url()/@import that is not inside the page (``#id``) or a ``data:`` URI, and any
    ``http://``/``https://`` at all."""
    found = [ref for ref in _REFERENCE.findall(page)
             if not ref.startswith("#") and not ref.lower().startswith("data:")]
    found += re.findall(r"https?://[^\s\"'<>)]+", page)
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------------------------------------
# The page

CSS = """
:root{--fg:#1d1d1f;--muted:#666;--line:#ddd;--bg:#fff;--accent:#1f5fa8;--soft:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 28px;border-bottom:1px solid var(--line);background:var(--soft)}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:var(--muted)}
nav{padding:8px 28px;border-bottom:1px solid var(--line);font-size:14px;position:sticky;top:0;background:var(--bg);z-index:2}
nav a{color:var(--accent);text-decoration:none;margin-right:14px;white-space:nowrap;display:inline-block}
main{max-width:1240px;padding:0 28px 40px}
section{border-bottom:1px solid var(--line);padding:10px 0 18px}
h2{font-size:19px;margin:18px 0 4px}
h3{font-size:16px;margin:16px 0 6px}
.kind{color:var(--muted);font-size:13px;font-weight:normal;margin-left:8px}
.path{color:var(--muted);font-size:13px;margin:0 0 8px;word-break:break-all}
.note{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px;margin:8px 0;font-size:14px}
.muted{color:var(--muted);font-size:13px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top}
thead th{background:var(--soft);cursor:pointer;user-select:none;white-space:nowrap;position:sticky;top:0}
thead th:hover{background:#e8eef7}
th.asc::after{content:" \\25B2";font-size:10px}th.desc::after{content:" \\25BC";font-size:10px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.facts th{background:var(--soft);font-weight:600;white-space:nowrap}
table.facts td{word-break:break-word;max-width:900px}
figure{margin:10px 0 16px}
.plot svg,.plot img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:var(--muted);max-width:1000px}
.cmd{margin:4px 0 0}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);padding:1px 4px;border-radius:3px;word-break:break-all}
details{margin:8px 0}summary{cursor:pointer;color:var(--accent)}
.gen td{max-width:360px;word-break:break-word}
.ok{color:#1a7f37}.bad{color:#b42318}
"""

# Sorts a table by the clicked column: numbers (data-v) numerically, the rest as text.
JS = """
(function(){
  function key(td){ return td.hasAttribute('data-v') ? parseFloat(td.getAttribute('data-v')) : td.textContent.trim().toLowerCase(); }
  document.querySelectorAll('table.sortable').forEach(function(tbl){
    var ths = tbl.tHead ? tbl.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(ths, function(th, i){
      th.addEventListener('click', function(){
        var asc = !th.classList.contains('asc');
        Array.prototype.forEach.call(ths, function(h){ h.classList.remove('asc', 'desc'); });
        th.classList.add(asc ? 'asc' : 'desc');
        var body = tbl.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = key(a.cells[i]), y = key(b.cells[i]);
          if (typeof x === 'number' && typeof y !== 'number') return -1;
          if (typeof y === 'number' && typeof x !== 'number') return 1;
          var c = x < y ? -1 : x > y ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
})();
"""


def page(title: str, subtitle: list[str], sections: Iterable) -> str:
    """The whole page: header, a bar of links to the sections, the sections."""
    sections = list(sections)
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(s.html() for s in sections)
    sub = "".join(f"<p>{esc(x)}</p>" for x in subtitle)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{sub}</header><nav>{nav}</nav><main>{body}</main>"
            f"<script>{JS}</script></body></html>\n")
