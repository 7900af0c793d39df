"""The page: a results folder's report as one self-contained HTML file, to send a colleague.

The page works offline and runs no script: its figures are embedded as data URIs, its style is inline.
It holds the spec's question (its comparisons), the verdicts with the paired-difference figures they rest
on, the summary and comparison tables (the cells ``bnbench report`` prints, :mod:`bnbench.reporting.cells`),
every other figure with its alt text, the rows of
``docs/claims.md`` that cite the spec (in a source checkout), and the provenance: versions, device,
execution contexts, commit, command and the spec itself. Every table has a caption and column
headers. tests/test_html_report.py loads it in Chromium.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from bnbench.training import context
from bnbench.reporting import cells
from bnbench.reporting.model import Report
from bnbench.results.csv_files import write_atomic
from bnbench.results.folder import ResultsStore

CLAIMS = Path(__file__).resolve().parents[2] / "docs" / "claims.md"
_MIME = {".png": "image/png", ".svg": "image/svg+xml"}
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border-bottom: 1px solid #ccc; padding: 0.2em 0.8em 0.2em 0; text-align: left; vertical-align: top; }
figure { margin: 1em 0 2em; } img { max-width: 100%; height: auto; }
pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; } .best { font-weight: 700; color: #064; }
"""


def write_page(path: str | Path, results_dir: str | Path, result: Report, figures: list[Path]) -> Path:
    """Writes the page of ``result`` (the report of ``results_dir``) with its ``figures`` to ``path``,
    whole or not at all (:func:`bnbench.results.csv_files.write_atomic`); returns the path."""
    results_dir, path = Path(results_dir), Path(path)
    spec_path = results_dir / "spec.toml"
    spec_text = spec_path.read_text(encoding="utf-8") if spec_path.exists() else ""
    meta = ResultsStore(results_dir).read_meta()
    write_atomic(path, page_text(result, figures, meta, spec_text, claims(result.name)))
    return path


def page_text(result: Report, figures: list[Path], meta: dict, spec_text: str, claim_rows: list[list[str]]) -> str:
    """The HTML text of the page (see the module docstring)."""
    title = f"bnbench report: {result.name}"
    paired = [path for path in figures if path.stem.startswith("paired_")]  # paired.paired_stem
    others = [path for path in figures if path not in paired]
    parts = [f"<h1>{_text(title)}</h1>", _question(result), _verdicts(result, paired), _summary(result),
             _comparisons(result), _figures(others, len(paired)), _claims(claim_rows),
             _provenance(result, meta, spec_text), _notes(result.notes)]
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_text(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<style>{_STYLE}</style>\n</head>\n'
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def claims(spec_name: str, path: Path = CLAIMS) -> list[list[str]]:
    """The rows of the claims table (``docs/claims.md``) whose experiment column cites ``spec_name``, as
    plain text cells; none outside a source checkout."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        markdown_cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(markdown_cells) == 4 and f"(experiments/{spec_name}.md)" in markdown_cells[1]:
            rows.append([_plain(c) for c in markdown_cells])
    return rows


def _plain(markdown: str) -> str:
    """Markdown cell text without links' targets, emphasis or code marks."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown).replace("**", "").replace("`", "")


def _text(value) -> str:
    return html.escape(str(value), quote=True)


def _table(caption: str, header: list[str], rows: list[list[str]], best: int | None = None) -> str:
    head = "".join(f'<th scope="col">{_text(h)}</th>' for h in header)
    marked = ' class="best"'
    body = "".join(
        f"<tr{marked if i == best else ''}>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table>\n<caption>{_text(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>"


def _question(result: Report) -> str:
    if not result.comparisons:
        return "<section><h2>Question</h2><p>The spec states no comparison (add <code>compare</code> to it).</p></section>"
    asked = "".join(f"<li>{_text(c.axis)}: {_text(c.a)} against {_text(c.b)}</li>" for c in result.comparisons)
    margin = f"<p>A difference within ±{result.margin:g} does not matter.</p>" if result.margin is not None else ""
    return f"<section><h2>Question</h2><p>Paired comparisons of {_text(result.metric)}:</p><ul>{asked}</ul>{margin}</section>"


def _verdicts(result: Report, paired: list[Path]) -> str:
    """The verdicts, with the paired-difference figures they rest on."""
    lines = cells.verdicts(result)
    if not lines:
        return ""
    items = "".join(f"<li>{_text(line)}</li>" for line in lines)
    return f"<section><h2>Verdicts</h2><ul>{items}</ul>{_figure_items(paired)}</section>"


def _summary(result: Report) -> str:
    header, rows = cells.summary_cells(result.summary, result.by)
    best = cells.best_row(result.summary, result.metric) if result.probe_step is None else None
    caption = cells.summary_title(result.name, result.metric, len(result.runs)) + ("; best mean in bold" if best is not None else "")
    return f"<section><h2>Summary</h2>{_table(caption, header, rows, best)}</section>"


def _comparisons(result: Report) -> str:
    tables = []
    for c in result.comparisons:
        header, rows = cells.compare_cells(c.table, c.by, c.a, c.b, result.alpha)
        tables.append(_table(f"paired differences in {result.metric}: {c.axis}={c.a} minus {c.b}", header, rows))
    return f"<section><h2>Comparisons</h2>{''.join(tables)}</section>" if tables else ""


def _figures(figures: list[Path], shown: int) -> str:
    """The figures not shown with the verdicts; ``shown`` counts those that were."""
    if not figures:
        return "" if shown else "<section><h2>Figures</h2><p>No figures were written (--no-plots).</p></section>"
    return "<section><h2>Figures</h2>" + _figure_items(figures) + "</section>"


def _figure_items(figures: list[Path]) -> str:
    items = []
    for path in figures:
        name = _text(path.name)
        alt = _text(f"figure {path.stem.replace('_', ' ')}")
        if path.suffix in _MIME:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            items.append(f'<figure><img src="data:{_MIME[path.suffix]};base64,{data}" alt="{alt}">'
                         f"<figcaption>{name}</figcaption></figure>")
        else:  # a PDF cannot be an image of the page: it stays a file beside it
            items.append(f"<figure><figcaption>{name}: a {path.suffix[1:].upper()} file in the results folder</figcaption></figure>")
    return "\n".join(items)


def _claims(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    table = _table("rows of docs/claims.md from this experiment", ["claim", "experiment", "measured", "verdict"], rows)
    return f"<section><h2>Claims</h2>{table}</section>"


def _provenance(result: Report, meta: dict, spec_text: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    facts = [("command", meta.get("command")), ("started", meta.get("started")), ("finished", meta.get("finished")),
             ("versions", versions), ("python", meta.get("python")), ("commit", meta.get("git_commit")),
             ("platform", meta.get("platform")), ("backend", meta.get("backend")),
             ("device", meta.get("device_kind")), ("processor", meta.get("host_processor")),
             ("devices", meta.get("device_count")), ("engine", meta.get("engine"))]
    items = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in facts if v not in (None, ""))
    columns = [c for c in context.COLUMNS if c in result.runs]
    contexts = result.runs.groupby(columns, dropna=False, observed=True).size().reset_index(name="runs") if columns else pd.DataFrame()
    table = _table("execution contexts of the runs (runs.csv)", [*columns, "runs"],
                   [["" if pd.isna(v) else str(v) for v in row] for row in contexts.itertuples(index=False)]) if columns else ""
    spec = f"<h3>spec.toml</h3><pre>{_text(spec_text)}</pre>" if spec_text else ""
    return f"<section><h2>Provenance</h2><dl>{items}</dl>{table}{spec}</section>"


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return "<section><h2>Notes</h2><ul>" + "".join(f"<li>{_text(n)}</li>" for n in notes) + "</ul></section>"
