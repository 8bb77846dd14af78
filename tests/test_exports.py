"""Export -> import -> ablate gives the same ablation; a shared direction steers a plain
Hugging Face model exactly as langloc's own intervention; the llama.cpp control vector reads back."""

import json

import pytest
import torch

from langloc.errors import LanglocError
from langloc.identify import NeuronSet
from report_run import invoke
from tiny import save_tiny_llama, write_folder_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    model = save_tiny_llama(root / "tiny")
    corpus = write_folder_corpus(root / "corpus")
    run = root / "run"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "512", "--window", "64",
                  "-o", run, "--device", "cpu") == 0
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    assert invoke("ablate", run, "--eval-tokens", "128", "--device", "cpu") == 0
    export = root / "export"
    assert invoke("export", run, "--diffmean", "en-fr,en-ru", "--gguf", "-o", export) == 0
    return root, model, corpus, run, export


def test_export_import_ablate_gives_the_same_ablation_csv(run):
    root, model, corpus, original, export = run
    index = json.loads((export / "langloc.json").read_text())
    assert index["kind"] == "langloc.export" and index["layout_version"] == 1
    assert index["model"]["weights_fingerprint"] and set(index["directions"]) == {"en-fr", "en-ru"}
    assert "neuron set `lape`" in (export / "README.md").read_text()
    assert invoke("import", export, "-o", root / "imported", "-m", model) == 0
    a = NeuronSet.load(original / "neurons" / "lape.json")
    b = NeuronSet.load(root / "imported" / "neurons" / "lape.json")
    assert b.languages == a.languages and all(
        torch.equal(x, y) for lang in a.languages for x, y in zip(a.layers(lang), b.layers(lang)))
    # The imported run names the exporting run's corpus and window: ablate needs no more options.
    assert invoke("ablate", root / "imported", "--eval-tokens", "128", "--device", "cpu") == 0
    assert (root / "imported" / "ablation.csv").read_text() == (original / "ablation.csv").read_text()


def test_import_refuses_another_model(run, tmp_path, capsys):
    root, model, corpus, original, export = run
    other = save_tiny_llama(tmp_path / "other", seed=1)
    assert invoke("import", export, "-o", tmp_path / "imported", "-m", other) == 2
    assert "was made for model" in capsys.readouterr().err
    assert not (tmp_path / "imported").exists()


def test_a_shared_direction_steers_a_plain_hf_model_with_langlocs_logits(run):
    from transformers import AutoModelForCausalLM

    from langloc.hub import decoder_layers, load_direction, steering
    from langloc.intervene.intervention import Intervention, ResidualEdit
    from langloc.models import load_model
    from langloc.stats import ActivationStats
    from langloc.steer.diffmean import diffmean_vectors

    root, model, corpus, original, export = run
    direction = load_direction(export, "en-fr")
    assert (direction.source, direction.target) == ("en", "fr")
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    plain = AutoModelForCausalLM.from_pretrained(model).eval()
    assert decoder_layers(plain) is plain.model.layers
    with torch.inference_mode():
        before = plain(ids).logits
        with steering(plain, direction, layers=[1], alpha=4.0):
            steered = plain(ids).logits
        after = plain(ids).logits
    # langloc's own intervention, as `langloc steer` builds diffmean(L1x4) from the run.
    lm = load_model(str(model), device="cpu")
    v = diffmean_vectors(ActivationStats.load(original), "fr", "en")
    edit = ResidualEdit.at(lm.num_layers, {1: 4.0 * v[1].float()})
    with torch.inference_mode(), Intervention([edit]).apply(lm):
        langloc_logits = lm.model(ids).logits
    assert torch.equal(steered, langloc_logits)
    assert not torch.allclose(steered, before)  # it steers
    assert torch.equal(after, before)  # and the hook is gone after the block


def test_the_llama_cpp_control_vector_reads_back(run):
    from langloc.exports import read_control_vector
    from langloc.hub import load_direction

    root, model, corpus, original, export = run
    direction = load_direction(export, "en-ru")
    vectors, info = read_control_vector(export / "directions" / "en-ru.gguf")
    L = direction.vectors.shape[0]
    assert info == {"model_hint": "llama", "layer_count": L - 1}
    assert sorted(vectors) == list(range(1, L))  # direction.<il> for il >= 1: llama.cpp has no layer 0
    assert all(torch.equal(vectors[l], direction.vectors[l]) for l in range(1, L))


def test_the_hub_loader_refuses_what_is_not_an_export(run, tmp_path):
    from langloc.hub import load_direction, load_neurons

    root, model, corpus, original, export = run
    with pytest.raises(LanglocError, match="not a langloc export"):
        load_direction(tmp_path)
    with pytest.raises(LanglocError, match="no direction 'en-zh'.*it has: en-fr, en-ru"):
        load_direction(export, "en-zh")
    assert set(load_neurons(export)) == {"en", "fr", "ru"}
