"""Sharing categories, attribution and causal tests (langloc share): exact on known activations,
the tasks are parallel, the CLI end to end on a tiny model, and bad input."""

import csv
import json
import math

import pytest
import torch

from conftest import CharTokenizer, tiny_model
from langloc.errors import LanglocError
from langloc.intervene import Edit, Intervention
from langloc.models.loading import bind
from langloc.share import (
    CATEGORIES, CategoryAttribution, ReferenceAggregation, TopContribution, capture, category_shares, causal_sets, classify, column_norms, conditions,
    gold_directions, neuron_scores, stability,
)
from langloc.tasks import get_task
from test_cli import error_line, invoke
from tiny import save_tiny_llama

A, P, S, N = range(4)  # all_shared, partial_shared, specific, non_activated


# -- categories on fabricated activations -------------------------------------------------------

def test_categories_of_known_activations():
    # [K=3 languages, L=1, I=6]
    acts = torch.tensor([[[1.0, 1.0, 0.0, 0.0, 0.2, -3.0]],
                         [[2.0, 0.0, -1.0, 0.0, 0.2, 5.0]],
                         [[3.0, 2.0, 0.5, -1.0, 0.2, 0.0]]])
    assert classify(acts).tolist() == [[A, P, S, N, A, S]]
    # Strictly above the threshold: 0.2 is activated at 0.1, not at 0.2.
    assert classify(acts, 0.1).tolist() == [[A, P, S, N, A, S]]
    assert classify(acts, 0.2).tolist() == [[A, P, S, N, N, S]]
    assert classify(acts, 1.5).tolist() == [[P, S, N, N, N, S]]
    # Two languages: no partial-shared category.
    assert classify(acts[:2]).tolist() == [[A, S, N, N, A, S]]
    with pytest.raises(LanglocError, match="at least 2 languages"):
        classify(acts[:1])
    for bad in (float("nan"), float("inf")):
        with pytest.raises(LanglocError, match="threshold must be finite"):
            classify(acts, bad)


def test_shares_and_stability_of_known_codes():
    # [N=4 items, L=2, I=3]
    codes = torch.tensor([[[A, S, N], [A, A, A]],
                          [[A, S, P], [A, A, N]],
                          [[A, N, P], [A, A, N]],
                          [[P, N, S], [A, A, N]]], dtype=torch.int8)
    shares = category_shares(codes)
    # layer 0: per item (A,P,S,N) shares: (1/3,0,1/3,1/3), (1/3,1/3,1/3,0), (1/3,1/3,0,1/3), (0,1/3,1/3,1/3)
    assert torch.allclose(shares[0], torch.tensor([3, 3, 3, 3], dtype=torch.float64) / 12)
    assert torch.allclose(shares[1], torch.tensor([9, 0, 0, 3], dtype=torch.float64) / 12)
    assert torch.allclose(shares.sum(1), torch.ones(2, dtype=torch.float64))
    modal, frac, counts = stability(codes)
    # neuron (0,1): S twice, N twice -> tie goes to the category listed first (specific)
    assert modal.tolist() == [[A, S, P], [A, A, N]]
    assert frac.tolist() == [[0.75, 0.5, 0.5], [1.0, 1.0, 0.75]]
    assert counts[0, 2].tolist() == [0, 2, 1, 1]
    sets = causal_sets(modal, seed=0)
    assert [i.tolist() for i in sets["all_shared"]] == [[0], [0, 1]]
    assert [i.tolist() for i in sets["specific"]] == [[1], []]
    assert [len(i) for i in sets["random(all_shared)"]] == [1, 2]
    names = [c[0] for c in conditions(sets, [1.5, 2])]
    assert names == ["base", "zero:all_shared", "zero:random(all_shared)", "zero:specific", "zero:random(specific)",
                     "x1.5:all_shared", "x1.5:random(all_shared)", "x2:all_shared", "x2:random(all_shared)"]


def test_attribution_formulas_and_means_by_category():
    coef = torch.tensor([[2.0, -3.0, 0.5]])  # [L=1, I=3]
    norms = torch.tensor([[1.0, 2.0, 4.0]])
    direction = torch.tensor([[0.5, 1.0, -2.0]])  # E[y]^T W_out[:, i]
    c, e = neuron_scores(coef, norms, direction)
    assert c.tolist() == [[2.0, 6.0, 2.0]]
    assert e.tolist() == [[1.0, -3.0, -1.0]]
    acc = CategoryAttribution(1)
    acc.add(torch.tensor([[A, A, S]]), c, e, torch.tensor([[1.0, -1.0, 4.0]]))
    acc.add(torch.tensor([[A, S, S]]), c, e, torch.tensor([[3.0, 2.0, 0.0]]))
    means = acc.means()
    assert acc.n[0].tolist() == [3, 0, 3, 0]
    assert means["contribution"][0, A] == pytest.approx((2 + 6 + 2) / 3)
    assert means["effective"][0, S] == pytest.approx((-1 - 3 - 1) / 3)
    assert means["effective_abs"][0, A] == pytest.approx((1 + 3 + 1) / 3)
    assert means["grad_x_act"][0, A] == pytest.approx((1 - 1 + 3) / 3)
    assert means["grad_x_act_abs"][0, S] == pytest.approx((4 + 2 + 0) / 3)
    assert math.isnan(means["contribution"][0, P])
    rows = acc.rows("t")
    assert [r["category"] for r in rows] == list(CATEGORIES) and rows[0]["n"] == 3


# -- capture on tiny models with activations set by an intervention -------------------------------

def _lm(arch, dtype=torch.float32):
    return bind(tiny_model(arch, layers=2, width=8).to(dtype), CharTokenizer(), f"tiny-{arch}")


def _values(L, I, k):
    """Known activations for 'language' k of 3: neuron i of layer l is activated (positive) in
    language k iff bit k of (i + l) % 8 is set, so each layer has all four categories."""
    out = torch.empty(L, I)
    for layer in range(L):
        for i in range(I):
            on = ((i + layer) % 8) >> k & 1
            out[layer, i] = 0.5 + 0.25 * i + k if on else -0.125 * (i % 3)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_capture_sees_set_activations_and_scores_are_exact(arch):
    lm = _lm(arch)
    L, I = lm.num_layers, lm.intermediate_size
    prompts, golds = ["hello there", "hi", "a longer prompt here"], [" x", " yz", "!"]
    caps = []
    for k in range(3):
        values = _values(L, I, k)
        iv = Intervention([Edit("set", [torch.arange(I)] * L, list(values))])
        # Record what the output projection actually writes at the last token, independently.
        outs, handles = [None] * L, []
        for layer, m in enumerate(lm.down_modules):
            handles.append(m.register_forward_hook(lambda mod, a, o, layer=layer: outs.__setitem__(layer, o.detach())))
        try:
            with iv.apply(lm):
                cap = capture(lm, prompts, golds)
        finally:
            for h in handles:
                h.remove()
        caps.append(cap)
        # Every prompt (different lengths, right-padded) sees exactly the set values.
        assert torch.equal(cap.last, values.expand(3, L, I))
        assert torch.equal(cap.stat, cap.last)
        if arch == "gpt2":  # plain MLP: the output coefficient is the activation
            assert torch.equal(cap.coef, cap.last)
        assert cap.gold.tolist() == [ord(g[0]) for g in golds]
        c, e = neuron_scores(cap.coef, column_norms(lm), gold_directions(lm, cap.gold))
        E = lm.model.get_output_embeddings().weight
        for layer, m in enumerate(lm.down_modules):
            W = m.weight.T if arch == "gpt2" else m.weight  # Conv1D stores [in, out]
            assert W.shape == (32, I)
            assert torch.allclose(c[:, layer], cap.coef[:, layer].abs() * W.norm(dim=0), atol=1e-6)
            assert torch.allclose(e[:, layer], cap.coef[:, layer] * (E[cap.gold] @ W), atol=1e-5)
            # The effective scores of a layer add up to the gold logit's share of the MLP output.
            bias = m.bias if m.bias is not None else 0
            last = torch.tensor([len(p) for p in prompts])  # BOS + characters: last index = len(prompt)
            written = outs[layer][torch.arange(3), last] - bias
            assert torch.allclose(e[:, layer].sum(-1), (E[cap.gold] * written).sum(-1), atol=1e-4)
    expected = classify(torch.stack([_values(L, I, k) for k in range(3)]))
    assert torch.equal(classify(torch.stack([c.stat[0] for c in caps])), expected)
    assert expected[1].tolist() == [S, S, P, S, P, P, A, N]  # (i + 1) % 8 = 1..7, 0: bits set 1,1,2,1,2,2,3,0


def test_reference_aggregation_max_mean_min_sum_with_empty_as_zero():
    # One layer, 5 neurons: codes all-shared, all-shared, specific, non, non; partial-shared empty.
    codes = torch.tensor([[A, A, S, N, N]], dtype=torch.int8)
    v = torch.tensor([[1.0, 3.0, 5.0, -2.0, 4.0]])
    agg = ReferenceAggregation.aggregate(codes, v)
    assert agg[0, A].tolist() == [3.0, 2.0, 1.0, 4.0]
    assert agg[0, P].tolist() == [0.0, 0.0, 0.0, 0.0]  # empty: 0, not NaN
    assert agg[0, S].tolist() == [5.0, 5.0, 5.0, 5.0]
    assert agg[0, N].tolist() == [4.0, 1.0, -2.0, 2.0]
    # Two items of one language: the second has no all-shared neuron. The reference averages the
    # per-item aggregates (with 0 for the empty one); langloc's pooled mean averages neurons.
    ref, pooled = ReferenceAggregation(1, 1), CategoryAttribution(1)
    codes2 = torch.tensor([[S, S, S, N, N]], dtype=torch.int8)
    v2 = torch.tensor([[10.0, 0.0, 2.0, 1.0, 1.0]])
    for c, x in ((codes, v), (codes2, v2)):
        ref.add(0, c, x, x)
        pooled.add(c, x, x)
    m = ref.means()["effective"][0, 0]
    assert m[A].tolist() == [1.5, 1.0, 0.5, 2.0]  # (3+0)/2, (2+0)/2, (1+0)/2, (4+0)/2
    assert m[S].tolist() == [7.5, 4.5, 2.5, 8.5]  # (5+10)/2, (5+4)/2, (5+0)/2, (5+12)/2
    pm = pooled.means()["effective"][0]
    assert pm[A].item() == 2.0 and pm[S].item() == pytest.approx(17 / 4) and math.isnan(pm[P].item())


def test_top_contribution_make_up():
    codes = torch.tensor([[A, S, N, P, A], [N, N, N, N, A]], dtype=torch.int8)
    contrib = torch.tensor([[5.0, 4.0, 0.0, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0, 0.0]])
    top = TopContribution(2, 2, top_k=3)
    top.add(0, codes, contrib)  # layer 0's top 3: neurons 0 (A), 1 (S), 4 (A); layer 1's: 3, 2, 1 (all N)
    s = top.shares()
    assert s[0, 0].tolist() == pytest.approx([2 / 3, 0, 1 / 3, 0]) and s[0, 1].tolist() == pytest.approx([0, 0, 0, 1])
    assert s[1].sum().item() == 0  # no instance of language 1 yet
    big = TopContribution(1, 2, top_k=800)  # fewer neurons than top_k: all of them
    big.add(0, codes, contrib)
    assert big.shares()[0, 1].tolist() == pytest.approx([0.2, 0, 0, 0.8])


class _MergingTokenizer:
    """Greedy longest match over a tiny vocabulary in which "ab" is one token."""
    vocab = {"ab": 10, "a": 1, "b": 2, "c": 3, "bc": 11}
    bos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            piece = text[i:i + 2] if text[i:i + 2] in self.vocab else text[i]
            ids.append(self.vocab[piece])
            i += len(piece)
        return {"input_ids": ids}


@pytest.mark.parametrize("add_bos", [False, True])
def test_gold_token_joint_versus_separate(add_bos):
    from types import SimpleNamespace

    from langloc.share.capture import encode_prompts

    lm = SimpleNamespace(tokenizer=_MergingTokenizer(), add_bos=add_bos)
    # Prompt "a", gold "bc": on its own the gold starts with "bc" (11); in "abc" the prompt's
    # length lands on "c" (3), because "ab" is one token: the reference code's gold token.
    ctx, gold = encode_prompts(lm, ["a", "c"], ["bc", "a"], "joint")
    assert gold == [3, 1] and ctx == [[0, 1] if add_bos else [1], [0, 3] if add_bos else [3]]
    _, sep = encode_prompts(lm, ["a", "c"], ["bc", "a"], "separate")
    assert sep == [11, 1]
    with pytest.raises(LanglocError, match="gold-token rule"):
        encode_prompts(lm, ["a"], ["b"], "both")


def test_gradient_x_activation_matches_finite_differences():
    # GPT-2 computes everything in float64 here (Llama's RMSNorm works in float32), so central
    # differences are exact to ~1e-9; the gradient reaches layer 0 through layer 1's neurons too.
    lm = _lm("gpt2", torch.float64)
    prompt, gold = "the word was", " w"
    cap = capture(lm, [prompt], [gold])
    ids = torch.tensor([[1] + [ord(ch) for ch in prompt]])
    y = ord(gold[0])

    def logp(layer, j, eps):
        def hook(mod, args, out):
            out = out.clone()
            out[0, -1, j] += eps
            return out

        h = lm.neuron_modules[layer].register_forward_hook(hook)
        try:
            with torch.no_grad():
                return torch.log_softmax(lm.model(input_ids=ids).logits[0, -1], -1)[y].item()
        finally:
            h.remove()

    assert cap.logp[0].item() == pytest.approx(logp(0, 0, 0.0), abs=1e-10)
    for layer, j in [(0, 3), (0, 6), (1, 5)]:
        fd = (logp(layer, j, 1e-5) - logp(layer, j, -1e-5)) / 2e-5
        assert cap.grad[0, layer, j].item() == pytest.approx(fd, rel=1e-6)


def test_position_all_reduces_over_prompt_tokens_without_bos():
    lm = _lm("gpt2")
    seen = {}

    def hook(mod, args, out):
        seen["a"] = out.detach().clone()

    h = lm.neuron_modules[1].register_forward_hook(hook)
    try:
        mean = capture(lm, ["abc"], [" d"], position="all", reduce="mean", gradients=False)
    finally:
        h.remove()
    a = seen["a"][0, 1:]  # tokens after BOS
    assert torch.allclose(mean.stat[0, 1], a.mean(0), atol=1e-6)
    top = capture(lm, ["abc"], [" d"], position="all", reduce="max", gradients=False)
    assert torch.allclose(top.stat[0, 1], a.max(0).values)
    # The default is the reference code's "any token": the maximum (above 0 iff any token is).
    default = capture(lm, ["abc"], [" d"], position="all", gradients=False)
    assert torch.equal(default.stat, top.stat) and not torch.allclose(default.stat, mean.stat)
    assert torch.equal(top.last[0, 1], a[-1])


# -- tasks -----------------------------------------------------------------------------------------

def test_bible_tasks_are_parallel_and_wrap_the_choice_task():
    from langloc.data.bible import bible_verses
    from langloc.tasks.bible_choice import bible_choice_items

    langs = ["en", "fr", "zh"]
    lm_items = get_task("bible-lm", max_chars=150).items(langs, 5)
    assert [it.id for it in lm_items["zh"]] == [it.id for it in lm_items["en"]]
    b, c, v = lm_items["fr"][0].meta["verse"]
    assert lm_items["fr"][0].prompt == bible_verses("fr", "eval")[(b, c, v - 1)]
    assert lm_items["fr"][0].gold == " " + bible_verses("fr", "eval")[(b, c, v)]
    assert lm_items["zh"][0].gold == bible_verses("zh", "eval")[(b, c, v)]  # no space before Chinese

    task = get_task("bible-choice", max_chars=150)
    items = task.items(langs, 5)
    assert task.resolve_target(langs) == "de"  # English is analysed, so the candidates are German
    ref = {it.meta["verse"]: it for it in bible_choice_items("fr", "eval", 50, target="de", max_chars=150)}
    for i in range(5):
        row = [items[lang][i] for lang in langs]
        assert len({it.id for it in row}) == 1 and len({it.choices for it in row}) == 1
        assert len({it.label for it in row}) == 1
        same = ref[row[1].meta["verse"]]
        assert (row[1].prompt, row[1].choices, row[1].label) == (same.prompt, same.choices, same.label)
        assert row[1].gold == same.gold
    with pytest.raises(LanglocError, match="also an analysed language"):
        get_task("bible-choice", target="fr").items(langs, 2)


def test_bible_lm_score_is_the_verse_likelihood():
    from tiny import byte_tokenizer, tiny_llama

    lm = bind(tiny_llama(), byte_tokenizer(), "tiny")
    task = get_task("bible-lm", max_chars=40)
    items = task.items(["en", "fr"], 3)["fr"]
    score = task.score(lm, items, batch_size=2)
    tok, total, n, right = lm.tokenizer, 0.0, 0, 0
    for it in items:
        ctx = tok(it.prompt)["input_ids"]  # BOS + prompt
        cont = tok(it.gold, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ctx + cont])).logits[0]
        logp = torch.log_softmax(logits[len(ctx) - 1:-1], -1)
        total += logp[torch.arange(len(cont)), torch.tensor(cont)].sum().item()
        right += (logits[len(ctx) - 1:-1].argmax(-1) == torch.tensor(cont)).sum().item()
        n += len(cont)
    assert score.extra["tokens"] == n
    assert score.extra["nll"] == pytest.approx(-total / n, rel=1e-5)
    assert score.accuracy == right / n


def test_gsm_symbolic_loader_reads_aligned_problems(tmp_path):
    from langloc.tasks.gsm_symbolic import same_number

    for lang, q in [("eng", "Tom has {} apples."), ("fra", "Tom a {} pommes.")]:
        d = tmp_path / "templates" / lang / "symbolic"
        d.mkdir(parents=True)
        for i, ans in enumerate([10, 1250, 7]):
            extra = "ignore = true\n" if (lang, i) == ("fra", 2) else ""
            (d / f"{i:04d}.toml").write_text(f'question = "{q.format(i)}"\nanswer = """\nsteps\n#### {ans:,}\n"""\n{extra}')
    items = get_task("gsm-symbolic", data=tmp_path / "templates").items(["en", "fr"], 5)
    assert [it.id for it in items["fr"]] == ["0000", "0001"]  # problem 2 is marked ignore in French
    assert items["fr"][1].prompt == "Question: Tom a 1 pommes.\nAnswer: The answer is"
    assert items["en"][1].gold == " 1250"
    assert same_number(" 1,250 apples", "1250") and not same_number(" 125", "1250") and not same_number("none", "1")
    with pytest.raises(LanglocError, match="not found"):
        get_task("gsm-symbolic", data=tmp_path / "nowhere").items(["en", "fr"], 2)


# -- CLI -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("share") / "tiny")


def test_cli_share_end_to_end(tiny_folder, tmp_path):
    out = tmp_path / "share"
    assert invoke("share", "-m", tiny_folder, "--tasks", "bible-lm,bible-choice", "-l", "en,fr,ru", "--items", "2",
                  "--max-chars", "50", "--causal", "--boost", "2", "--no-boost-controls", "--device", "cpu",
                  "-o", out) == 0
    with open(out / "categories.csv") as fh:
        cats = list(csv.DictReader(fh))
    assert list(cats[0]) == ["task", "layer", "category", "share"]
    assert len(cats) == 2 * 2 * 4  # tasks x layers x categories
    for task in ("bible-lm", "bible-choice"):
        for layer in ("0", "1"):
            assert sum(float(r["share"]) for r in cats if r["task"] == task and r["layer"] == layer) == pytest.approx(1, abs=1e-5)
    with open(out / "stability.csv") as fh:
        stab = list(csv.DictReader(fh))
    assert len(stab) == 2 * 2 * 64 and {r["modal_category"] for r in stab} <= set(CATEGORIES)
    assert all(sum(int(r[c]) for c in CATEGORIES) == 2 for r in stab)  # counts over the 2 items
    with open(out / "attribution.csv") as fh:
        attr = list(csv.DictReader(fh))
    assert len(attr) == 2 * 2 * 4
    assert sum(int(r["n"]) for r in attr if r["task"] == "bible-lm") == 2 * 3 * 2 * 64  # items x langs x neurons
    with open(out / "attribution_reference.csv") as fh:
        ref = list(csv.DictReader(fh))
    assert list(ref[0]) == ["task", "language", "layer", "category", "score", "items", "max", "mean", "min", "sum"]
    assert len(ref) == 2 * 3 * 2 * 4 * len(CategoryAttribution.FIELDS)  # tasks x langs x layers x categories x scores
    assert {r["items"] for r in ref} == {"2"}
    for r in ref:
        if r["score"] == "contribution":  # contributions are >= 0: max >= mean >= min >= 0, sum >= max
            assert float(r["max"]) >= float(r["mean"]) - 1e-12 >= float(r["min"]) - 2e-12 >= -2e-12
            assert float(r["sum"]) >= float(r["max"]) - 1e-12
    with open(out / "top_contribution.csv") as fh:
        top = list(csv.DictReader(fh))
    assert len(top) == 2 * 3 * 2 * 4 and {r["top_k"] for r in top} == {"800"}
    for task in ("bible-lm", "bible-choice"):
        for lang in ("en", "fr", "ru"):
            assert sum(float(r["share"]) for r in top if r["task"] == task and r["language"] == lang
                       and r["layer"] == "1") == pytest.approx(1, abs=1e-5)
    with open(out / "causal.csv") as fh:
        causal = list(csv.DictReader(fh))
    assert list(causal[0])[:5] == ["task", "condition", "language", "accuracy", "n_neurons"]
    assert list(causal[0])[5:7] == ["accuracy_lo", "accuracy_hi"]
    # bible-choice: one answer per item, a Clopper-Pearson interval at any count; bible-lm pools tokens
    # over items, a Student-t interval that 2 items cannot support (docs/statistics.md)
    assert all(float(r["accuracy_lo"]) <= float(r["accuracy"]) <= float(r["accuracy_hi"])
               for r in causal if r["task"] == "bible-choice")
    assert all(r["accuracy_lo"] in ("", "nan") for r in causal if r["task"] == "bible-lm")
    conds = ["base", "zero:all_shared", "zero:random(all_shared)", "zero:specific", "zero:random(specific)", "x2:all_shared"]
    assert [r["condition"] for r in causal if r["task"] == "bible-choice" and r["language"] == "fr"] == conds
    counts = {r["condition"]: int(r["n_neurons"]) for r in causal if r["task"] == "bible-lm"}
    assert counts["zero:all_shared"] == counts["zero:random(all_shared)"] == counts["x2:all_shared"]
    assert counts["zero:specific"] == counts["zero:random(specific)"]
    meta = json.loads((out / "share.json").read_text())
    assert meta["languages"] == ["en", "fr", "ru"] and meta["threshold"] == 0.0 and meta["position"] == "last"
    assert meta["gold_tokens"] == "joint" and meta["top_k"] == 800
    assert meta["tasks"]["bible-choice"]["target"] == "de" and meta["model"]["intermediate_size"] == 64
    stab_lm = [r for r in stab if r["task"] == "bible-lm"]
    assert counts["zero:all_shared"] == sum(r["modal_category"] == "all_shared" for r in stab_lm)
    assert (out / "plots" / "categories.png").stat().st_size > 0
    assert (out / "plots" / "causal.png").stat().st_size > 0


def test_two_gloo_processes_write_the_single_process_sharing(tiny_folder, tmp_path):
    """The batches of items (one forward and backward pass each) and the causal (condition,
    language) evaluations are shared out over two processes; the sums are added in the batches'
    order, so every file is the one process's, written once."""
    from parallel import assert_same_outputs, run_cli

    args = ["share", "-m", tiny_folder, "--tasks", "bible-lm,bible-choice", "-l", "en,fr,ru", "--items", "3",
            "--max-chars", "50", "--batch-size", "3", "--causal", "--boost", "2", "--position", "all", "--device", "cpu"]
    single = run_cli(*args, "-o", tmp_path / "one")
    both = run_cli(*args, "-o", tmp_path / "two", processes=2)
    names = assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert {"categories.csv", "stability.csv", "attribution.csv", "attribution_reference.csv", "top_contribution.csv",
            "causal.csv", "share.json", "plots/categories.png", "plots/causal.png"} <= set(names)
    with open(tmp_path / "two" / "stability.csv") as fh:  # every item counted: 3 per neuron
        assert all(sum(int(r[c]) for c in CATEGORIES) == 3 for r in csv.DictReader(fh))
    with open(tmp_path / "two" / "causal.csv") as fh:
        causal = list(csv.DictReader(fh))
    assert len(causal) == 2 * 7 * 3  # tasks x (base, 4 zeroed, 2 boosted) x languages
    for done in (single, both):  # one process prints the table
        assert done.stdout.count("category shares") == 1, done.stdout
    # ... and the work was shared: the first of two processes ran 2 of each task's 3 batches.
    assert "share bible-lm: 100%|██████████| 3/3" in single.stderr
    assert "share bible-lm: 100%|██████████| 2/2" in both.stderr


@pytest.mark.parametrize("args, message", [
    (["--tasks", "bible-lm,xnli"], "unknown task(s) xnli"),
    (["-l", "en"], "at least 2 languages"),
    (["--threshold", "nan"], "threshold must be finite"),
    (["--threshold", "inf"], "threshold must be finite"),
    (["--position", "first"], "unknown position 'first'"),
    (["--position", "all", "--reduce", "median"], "unknown reduction 'median'"),
    (["--gold-tokens", "both"], "unknown gold-token rule 'both'"),
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--causal", "--boost", "2,x"], "boost factors must be numbers"),
    (["--causal", "--boost", "-1"], "finite and positive"),
    (["-l", "en,xx"], "unknown language(s) xx"),
    (["--choice-target", "fr"], "also an analysed language"),
    (["--items", "0"], "at least 1"),
])
def test_cli_share_bad_input_fails_before_the_model_loads(args, message, capsys, tmp_path):
    base = {"-l": "en,fr", "--tasks": "bible-lm,bible-choice"}
    for flag in ("-l", "--tasks"):
        if flag in args:
            base.pop(flag)
    argv = ["share", "-m", tmp_path / "no-such-model", "-o", tmp_path / "out", *sum(base.items(), ()), *args]
    assert invoke(*argv) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()
