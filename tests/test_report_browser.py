"""The report in a real headless Chromium (Debian's `chromium`; .ci/run installs it): every
expected section is there, every figure and image has rendered, nothing is logged as an
error, and a screenshot is taken. The checker itself fails on a broken page."""

import re
import struct

import pytest

from browser import check_report, find_chromium
from report_run import EXPECTED, make_report

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium is not installed (apt-get install chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    return make_report(root)[1]


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_the_report_renders_in_chromium(page, tmp_path):
    shot = tmp_path / "report.png"
    r = check_report(page, EXPECTED, screenshot=shot)
    assert r.problems == []
    assert [s["id"] for s in r.sections] == EXPECTED
    figures = [f for s in r.sections for f in s["figures"]]
    assert len(figures) == 4 and all(f["loaded"] and f["svg"] for f in figures)
    assert r.console_errors == []
    assert png_size(shot) == (1366, 900) and shot.stat().st_size > 20_000  # a page, not a blank screen


def broken(page, tmp_path, name, edit):
    out = tmp_path / name
    out.write_text(edit(page.read_text(encoding="utf-8")), encoding="utf-8")
    return check_report(out, EXPECTED)


def test_the_check_fails_when_a_section_is_missing(page, tmp_path):
    r = broken(page, tmp_path, "no-ablation.html",
               lambda t: re.sub(r'<section id="ablation" .*?</section>', "", t, flags=re.S))
    assert not r.ok
    assert [p for p in r.problems if p.startswith("section 'ablation' is missing")]


def test_the_check_fails_on_a_figure_that_does_not_render(page, tmp_path):
    # The steering plot replaced by an image whose data is not a PNG.
    r = broken(page, tmp_path, "bad-image.html",
               lambda t: re.sub(r'(<section id="steer" .*?<div class=plot>)<svg.*?</svg>',
                                r'\1<img alt="steering" src="data:image/png;base64,AAAA">', t, count=1, flags=re.S))
    assert any("figure 1 of section 'steer' did not render" in p for p in r.problems)
    assert any("image 'steering' did not load" in p for p in r.problems)


def test_the_check_fails_on_a_script_error(page, tmp_path):
    r = broken(page, tmp_path, "script-error.html",
               lambda t: t.replace("</body>", "<script>console.error('boom'); undefinedFunction();</script></body>"))
    assert any("console: boom" in p for p in r.problems)
    assert any("undefinedFunction" in p for p in r.problems)
