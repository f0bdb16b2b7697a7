"""The run's front page, ``report/index.html``: the analysis page with a bar of links to every stage's report.

Takes a run folder object (:class:`xltlib.runner.run_dir.Run`: ``path``, ``dir``, ``cfg``) without importing
the runner, which sits above the reporting layer.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pandas as pd



def interactive_results(run) -> list[str]:
    """Result files with rows written from an interactive session (``xlt lab`` marks them ``interactive``)."""

    found = []
    for f in sorted(run.path("results").glob("*/*.parquet")):
        try:
            flags = pd.read_parquet(f, columns=["interactive"])["interactive"]
        except (KeyError, ValueError):  # written before the column existed: a batch row
            continue
        if flags.fillna(False).astype(bool).any():
            found.append(str(f.relative_to(run.dir)))
    return found


def write_index(run, status: dict | None = None) -> Path:
    """``report/index.html``: the analysis page first, then links to every stage report."""
    if status is None:
        sp = run.path("status.json")
        status = json.loads(sp.read_text()) if sp.exists() else {}
    analysis = run.path("report", "05_analysis.html")
    items, unit_items = [], {}
    for name, st in sorted(status.items()):
        page = run.path("report", f"{name}.html")
        state = "skipped (already done)" if st.get("skipped") else ("ok" if st.get("ok") else f"FAILED: {st.get('error', '')}")
        link = f'<a href="{html.escape(os.path.relpath(page, run.path("report")))}">{html.escape(name)}</a>' \
            if page.exists() else html.escape(name)
        where = f" on {html.escape(st['host'])}" if st.get("host") else ""
        item = f"<li>{link} — {html.escape(state)} {st.get('seconds', '')}{' s' if 'seconds' in st else ''}{where}</li>"
        # one notebook per cell / checkpoint (training; transfer and alignment under a distributed executor)
        (unit_items.setdefault(st.get("stage"), []) if "/" in name else items).append(item)
    at = 1 if items else 0
    for stage, what in (("train", "training cells"), ("transfer", "transfer units (one per cell)"),
                        ("alignment", "alignment units (one per checkpoint)")):
        group = unit_items.get(stage, [])
        if group:
            failed = sum("FAILED" in i for i in group)
            items.insert(at, f"<li><details><summary>{len(group)} {what}{f', {failed} FAILED' if failed else ''}"
                             f"</summary><ul>{''.join(group)}</ul></details></li>")
            at += 1
    body = analysis.read_text(encoding="utf-8") if analysis.exists() else "<p>The analysis stage has not run.</p>"
    lab = interactive_results(run)
    warn = (f'<p style="color:#a00"><b>{len(lab)} result file(s) hold rows written from an interactive session '
            f"(xlt lab), not by a batch run</b> (column <code>interactive</code>): "
            f"{html.escape(', '.join(lab))}</p>") if lab else ""
    # the analysis page opens with the answers in brief and ends with the full summary (units, n, estimands)
    summary = re.search(r'<h2 id="([^"]*[Ss]ummary[^"]*)"', body)
    jump = f' · <a href="#{html.escape(summary.group(1))}">the summary in plain words</a>' if summary else ""
    nav = (f'<nav style="font-family:sans-serif;margin:1em 2em;padding:0.5em 1em;border:1px solid #ccc">'
           f"<b>Run {html.escape(run.cfg.name)}</b>{jump} — stage reports:<ul>{''.join(items)}</ul>{warn}</nav>")
    page = body.replace("<body", "<body", 1)
    idx = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    out = run.path("report", "index.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page[:idx] + nav + page[idx:], encoding="utf-8")
    return out
