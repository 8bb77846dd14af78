"""`langloc report`: one self-contained HTML page per analysis, found through the manifests."""

import json
import re
import shutil

import pytest

from langloc.report.html import external_references
from report_run import EXPECTED, invoke, make_report


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    paths, page = make_report(root)
    return paths, page.read_text(encoding="utf-8")


def section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}" .*?</section>', page, flags=re.S)
    assert m, f"no section {sid}"
    return m.group(0)


def test_one_section_per_output_in_the_order_of_an_analysis(analysis):
    _, page = analysis
    assert re.findall(r'<section id="([^"]+)"', page) == EXPECTED


def test_every_figure_is_inline_svg_with_searchable_text_and_its_command(analysis):
    paths, page = analysis
    figures = re.findall(r"<figure>.*?</figure>", page, flags=re.S)
    # neurons per layer, overlap, ablation heatmap, steering bars
    assert sum("<svg" in f for f in figures) == 4
    for f in figures:
        assert re.search(r"reproduce: <code>langloc \w+", f), f[-300:]
    # svg.fonttype none: labels are text elements, not glyph paths
    assert "<text" in section(page, "ablation") and "evaluated language" in section(page, "ablation")
    assert f"langloc ablate {paths['run']}" in section(page, "ablation")


def test_ablation_section_shows_intervals_and_controls(analysis):
    _, page = analysis
    s = section(page, "ablation")
    assert "random control on own text" in s
    # "ratio [lo, hi]" for each language's own set and its control, or why there is none
    shown = re.findall(r"\d\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]", s)
    missing = re.findall(r"\d\.\d{3} \(interval not reported: no spread over 16 windows\)", s)
    assert len(shown) >= 4 and len(shown) + len(missing) == 2 * 3
    assert "random:fr" in s


def test_steering_section_shows_rates_and_example_outputs(analysis):
    paths, page = analysis
    s = section(page, "steer")
    gens = [json.loads(x) for x in (paths["steer"] / "generations.jsonl").read_text().splitlines()]
    steered = [g for g in gens if g["method"] == "lape" and g["target"] == "fr"]
    rows = json.loads((paths["steer"] / "steer.json").read_text())["rows"]
    assert "Example outputs" in s and s.count("<table class=gen>") == len(rows) == 2  # lape and DiffMean
    for g in steered[:3]:
        assert g["prompt"] in s
    assert re.search(r"\d+% \[\d+–\d+\]", s)  # a rate with its interval
    assert "<th>decoding</th><td>greedy; 4 new tokens</td>" in s  # the rates hold for this decoding only
    assert "<th>relevance criterion</th><td>PMI &gt; 0 under the unsteered model" in s
    assert s.count(">CLaS-style score</th>") == 2  # per method and per target
    assert s.count(">relevant</th>") == 3  # per method, per target and in the source x target matrix
    assert s.count(">relative to native</th>") == 2  # strict success / the native ceiling, per method and target
    assert "<th>relative to the native ceiling</th><td>strict success / the strict success of" in s


def test_the_inventory_lists_studies_and_counts_their_pieces(analysis):
    paths, page = analysis
    s = section(page, "overview")
    files = re.findall(r"<td>([^<]*\.json)</td>", s)
    assert str(paths["steer"] / "steer.json") in files
    assert not [f for f in files if "/interventions/" in f]  # each steered cell's file is part of the study
    assert "2 interventions" in s  # lape and DiffMean on fr
    n = len(re.findall(r"<tbody>(.*?)</tbody>", s, flags=re.S)[-1].split("<tr>")) - 1
    assert f"Outputs found ({n})" in s


def test_an_unknown_kind_gets_the_generic_section(analysis):
    _, page = analysis
    s = section(page, "claims")
    assert 'data-kind="langloc.claims"' in s and "unknown to this langloc" in s
    assert "verdicts.csv" in s and "own language most" in s and "holds" in s


def test_the_same_folders_give_the_same_page(analysis, tmp_path):
    paths, page = analysis
    assert invoke("report", paths["run"], paths["steer"], paths["other"], "-o", tmp_path / "again.html") == 0
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == page


def test_no_external_urls(analysis):
    _, page = analysis
    assert external_references(page) == []
    assert re.search(r"https?:", page, flags=re.I) is None  # not even as text


@pytest.mark.parametrize("snippet", [
    '<img src="https://example.org/x.png">', "<link rel=stylesheet href='//cdn.example.org/a.css'>",
    "<style>@import 'fonts.css';</style>", '<div style="background:url(http://x/y.png)">',
    '<script src="app.js"></script>', '<use xlink:href="other.svg#a"/>'])
def test_the_url_check_finds_every_kind_of_reference(snippet):
    assert external_references(f"<html><body>{snippet}</body></html>")


def test_a_url_in_text_is_shown_but_not_written_as_a_url():
    from langloc.report.html import esc

    assert esc("see https://example.org/x") == "see https:&#47;&#47;example.org/x"
    assert external_references(f"<p>{esc('see https://example.org/x')}</p>") == []


def test_inline_references_are_not_external():
    assert external_references('<a href="#ablation">x</a><img src="data:image/png;base64,AAAA">'
                               '<rect clip-path="url(#f1-p0)"/>') == []


def test_a_format_1_run_is_shown_with_a_note(analysis, tmp_path):
    """Runs written before manifests (no kind in run.json, no manifest beside ablation.csv)."""
    paths, _ = analysis
    old = tmp_path / "old"
    shutil.copytree(paths["run"], old)
    doc = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({k: v for k, v in doc.items() if k not in ("kind", "format_version")}))
    ns = json.loads((old / "neurons" / "lape.json").read_text())
    (old / "neurons" / "lape.json").write_text(json.dumps({k: v for k, v in ns.items() if k != "format_version"}))
    (old / "ablation.manifest.json").unlink()
    assert invoke("report", old, "-o", tmp_path / "old.html") == 0
    page = (tmp_path / "old.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', page) == ["overview", "run", "neuron-set", "ablation"]
    assert page.count("format 1 (written before manifests)") >= 3
    assert "made by <code>langloc ablate</code>" in page


def test_bad_paths_are_one_line(tmp_path, capsys):
    assert invoke("report", tmp_path / "missing", "-o", tmp_path / "r.html") == 2
    assert "missing not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert invoke("report", tmp_path / "empty", "-o", tmp_path / "r.html") == 2
    err = capsys.readouterr().err
    assert "no langloc outputs under" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
