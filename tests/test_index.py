"""The run's front page (report/index.html): the analysis page under a bar of links to every stage's report."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from xltlib.reporting.index import write_index


def fake_run(tmp_path: Path, analysis_html: str):
    (tmp_path / "report").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "report" / "05_analysis.html").write_text(analysis_html, encoding="utf-8")
    return SimpleNamespace(dir=tmp_path, path=lambda *p: tmp_path.joinpath(*p), cfg=SimpleNamespace(name="quick"))


def test_index_links_the_summary_and_every_stage(tmp_path):
    page = '<html><body><h2 id="Step-1:-the-gate">Step 1</h2><h2 id="Step-6:-the-summary">Step 6</h2></body></html>'
    run = fake_run(tmp_path, page)
    (tmp_path / "report" / "01_data.html").write_text("<html></html>")
    status = {"01_data": dict(stage="data", ok=True, seconds=7), "05_analysis": dict(stage="analysis", ok=False,
                                                                                      error="ValueError: boom")}
    index = write_index(run, status).read_text(encoding="utf-8")
    assert '<a href="#Step-6:-the-summary">the summary in plain words</a>' in index
    assert '<a href="01_data.html">01_data</a> — ok 7 s' in index
    assert "FAILED: ValueError: boom" in index
    assert index.index("<nav") < index.index("Step 1")  # the bar sits above the analysis page


def test_index_without_an_analysis_page_says_so(tmp_path):
    run = fake_run(tmp_path, "")
    (tmp_path / "report" / "05_analysis.html").unlink()
    index = write_index(run, {}).read_text(encoding="utf-8")
    assert "The analysis stage has not run." in index and "the summary in plain words" not in index
