"""Interventions: every rule and position mode does what it says on tiny models of several
architectures, and removing an intervention leaves the model bit for bit as before."""

import contextlib
import inspect

import pytest
import torch

from conftest import CharTokenizer, tiny_model
from langloc.errors import LanglocError
from langloc.intervene import Edit, Intervention, deactivate
from langloc.intervene.intervention import CACHE_KEYWORDS
from langloc.models.loading import bind

# Gated MLP (llama), GELU MLP (gpt2), and OPT, whose MLP runs on [batch * positions, I].
ARCHS = ["llama", "gpt2", "opt", "gemma3_text"]
RULES = ["zero", "set", "scale", "add"]
LAYERS, WIDTH = 3, 48


def make(arch):
    return bind(tiny_model(arch, layers=LAYERS, width=WIDTH), CharTokenizer(), f"tiny-{arch}")


def chosen(lm):
    """Neurons 3, 7 and 11 in every layer except the middle one (which stays untouched)."""
    idx = torch.tensor([3, 7, 11])
    return [idx if layer != 1 else torch.tensor([], dtype=torch.long) for layer in range(lm.num_layers)]


def edit_for(rule, layers):
    vals = [torch.full((len(i),), 2.5) for i in layers]
    return Edit(rule, layers, None if rule == "zero" else vals)


class Capture:
    """Records every forward pass's activations of every layer (after any intervention hook)."""

    def __init__(self, lm):
        self.calls = [[] for _ in range(lm.num_layers)]
        self.shape = None
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(lm.neuron_modules)]
        self.handles.append(lm.model.register_forward_pre_hook(self._pre, with_kwargs=True))

    def _pre(self, module, args, kwargs):
        x = kwargs.get("input_ids", args[0] if args else None)
        self.shape = tuple(x.shape)

    def _hook(self, layer):
        def hook(module, args, output):
            a = output if output.dim() == 3 else output.view(*self.shape, -1)
            self.calls[layer].append(a.detach().clone())
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def activations(lm, ids, intervention=None):
    """Per layer, the activations of one plain forward pass (with the intervention if given)."""
    if intervention is None:
        cap = Capture(lm)
        with torch.no_grad():
            lm.model(input_ids=ids, use_cache=False)
    else:
        with intervention.apply(lm):
            cap = Capture(lm)  # registered after the intervention's hooks: sees their result
            with torch.no_grad():
                lm.model(input_ids=ids, use_cache=False)
    cap.close()
    return [c[0] for c in cap.calls]


IDS = torch.tensor([[1, 40, 50, 60, 70, 80, 90, 100], [1, 41, 51, 61, 71, 81, 91, 101]])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("rule", RULES)
def test_rule_changes_exactly_the_chosen_neurons(arch, rule):
    lm = make(arch)
    layers = chosen(lm)
    base = activations(lm, IDS)
    # Layer 0 only: later layers see changed inputs, so only layer 0 can be compared exactly.
    only0 = [layers[0]] + [torch.tensor([], dtype=torch.long)] * (lm.num_layers - 1)
    got = activations(lm, IDS, Intervention([edit_for(rule, only0)]))[0]
    idx = layers[0]
    expect = {"zero": torch.zeros_like(base[0][..., idx]), "set": torch.full_like(base[0][..., idx], 2.5),
              "scale": base[0][..., idx] * 2.5, "add": base[0][..., idx] + 2.5}[rule]
    torch.testing.assert_close(got[..., idx], expect, rtol=0, atol=0)
    others = torch.ones(lm.intermediate_size, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(got[..., others], base[0][..., others])


@pytest.mark.parametrize("arch", ARCHS)
def test_removed_intervention_leaves_logits_bit_identical(arch):
    lm = make(arch)
    with torch.no_grad():
        before = lm.model(input_ids=IDS, use_cache=False).logits.clone()
        for rule in RULES:
            for positions in ("all", "prompt", "generated"):
                iv = Intervention([edit_for(rule, chosen(lm))], positions)
                with iv.apply(lm):
                    changed = lm.model(input_ids=IDS, use_cache=False).logits
                    lm.model.generate(input_ids=IDS[:, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
                if positions != "generated":  # a plain forward is all prompt
                    assert not torch.equal(changed, before), (rule, positions)
        after = lm.model(input_ids=IDS, use_cache=False).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in lm.neuron_modules)
    assert not lm.body._forward_pre_hooks and not lm.model._forward_pre_hooks


def generate_and_capture(lm, iv, new_tokens=3):
    with iv.apply(lm):
        cap = Capture(lm)
        with torch.no_grad():
            lm.model.generate(input_ids=IDS[:, :5], max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    cap.close()
    return cap.calls[0]  # layer 0: one entry per forward pass (prefill, then one per new token)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_position_modes_during_generate(arch, positions):
    lm = make(arch)
    idx = chosen(lm)[0]
    calls = generate_and_capture(lm, Intervention([edit_for("set", chosen(lm))], positions))
    prefill, steps = calls[0], calls[1:]
    assert prefill.shape[1] == 5 and all(s.shape[1] == 1 for s in steps) and len(steps) >= 1
    prompt_set = bool((prefill[..., idx] == 2.5).all())
    steps_set = all(bool((s[..., idx] == 2.5).all()) for s in steps)
    steps_free = all(bool((s[..., idx] != 2.5).all()) for s in steps)
    if positions == "all":
        assert prompt_set and steps_set
    elif positions == "prompt":
        assert prompt_set and steps_free and not (prefill[..., idx] != 2.5).any()
    else:
        assert (prefill[..., idx] != 2.5).all() and steps_set


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_position_modes_during_generate_without_a_cache(arch, positions):
    """generate(use_cache=False) recomputes the whole sequence at every step: the prompt is
    still the first 5 positions, and only later positions count as generated."""
    lm = make(arch)
    idx = chosen(lm)[0]
    with Intervention([edit_for("set", chosen(lm))], positions).apply(lm):
        cap = Capture(lm)
        with torch.no_grad():
            lm.model.generate(input_ids=IDS[:, :5], max_new_tokens=3, do_sample=False, pad_token_id=0,
                              use_cache=False)
    cap.close()
    calls = cap.calls[0]
    assert [c.shape[1] for c in calls] == [5, 6, 7]
    for c in calls:
        is_set = (c[..., idx] == 2.5).all(-1)  # [B, T]: every chosen neuron forced at that position
        is_free = (c[..., idx] != 2.5).all(-1)
        prompt = torch.arange(c.shape[1]) < 5
        changed, unchanged = (prompt, ~prompt) if positions == "prompt" else (~prompt, prompt)
        assert is_set[:, changed].all() and is_free[:, unchanged].all()


def cache_keyword(model) -> str:
    """The KV cache's keyword in this transformers release's forward (renamed between releases:
    CACHE_KEYWORDS); none of them is a failure, not a silent cache-less pass."""
    params = inspect.signature(model.forward).parameters
    keys = [k for k in CACHE_KEYWORDS if k in params]
    if not keys:
        pytest.fail(f"no KV cache keyword among {list(params)}")
    return keys[0]


@pytest.mark.parametrize("keyword", ["cache", "past_key_values", "kv_state"])
def test_decoding_step_position_comes_from_the_cache_under_any_name(keyword):
    """The cache's length gives a pass's start whatever keyword carries it (transformers renamed
    past_key_values to cache in 5.24); an unknown keyword is found by the Cache type."""
    from transformers import DynamicCache

    from langloc.intervene.intervention import _Positions

    lm = make("llama")
    cache = DynamicCache(config=lm.model.config)
    with torch.no_grad():
        lm.model(input_ids=IDS[:, :5], use_cache=True, **{cache_keyword(lm.model): cache})
    assert cache.get_seq_length() == 5
    tracker = _Positions(None)
    tracker.pre_hook(None, (), {"input_ids": IDS[:, :5]})  # the prompt of a new sequence
    tracker.pre_hook(None, (), {"input_ids": IDS[:, 5:6], keyword: cache, "position_ids": torch.tensor([[5]])})
    assert tracker.start == 5 and tracker.prompt_length == 5
    assert tracker.mask("generated", "cpu").tolist() == [True]


def test_a_continued_sequence_without_a_cache_is_an_error_not_a_new_prompt():
    from langloc.intervene.intervention import _Positions

    tracker = _Positions(None)
    tracker.pre_hook(None, (), {"input_ids": IDS[:, :5]})
    with pytest.raises(LanglocError, match="no KV cache was found"):
        tracker.pre_hook(None, (), {"input_ids": IDS[:, 5:6], "position_ids": torch.tensor([[5], [5]]),
                                    "renamed_cache": object()})


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_generated_mode_with_a_left_padded_batch(arch):
    """With left padding the prompt is the padded prompt length: the first generated token's
    pass is the first one changed, in every row."""
    lm = make(arch)
    idx = chosen(lm)[0]
    ids = IDS[:, :5].clone()
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0  # row 1 has a 3-token prompt, left-padded
    with Intervention([edit_for("set", chosen(lm))], "generated").apply(lm):
        cap = Capture(lm)
        with torch.no_grad():
            lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
    cap.close()
    prefill, steps = cap.calls[0][0], cap.calls[0][1:]
    assert (prefill[..., idx] != 2.5).all() and len(steps) == 2
    assert all((s[..., idx] == 2.5).all() for s in steps)


@pytest.mark.parametrize("arch", ARCHS)
def test_fixed_prompt_length_splits_a_plain_forward(arch):
    lm = make(arch)
    idx = chosen(lm)[0]
    iv = Intervention([edit_for("set", chosen(lm))], "generated")
    with iv.apply(lm, prompt_length=3):
        cap = Capture(lm)
        with torch.no_grad():
            lm.model(input_ids=IDS, use_cache=False)
    cap.close()
    a = cap.calls[0][0]
    assert (a[:, :3, idx] != 2.5).all() and (a[:, 3:, idx] == 2.5).all()


def test_edits_apply_in_order():
    lm = make("llama")
    layers = chosen(lm)
    only0 = [layers[0]] + [torch.tensor([], dtype=torch.long)] * 2
    base = activations(lm, IDS)[0][..., layers[0]]
    both = Intervention([edit_for("add", only0), edit_for("scale", only0)])
    got = activations(lm, IDS, both)[0][..., layers[0]]
    torch.testing.assert_close(got, (base + 2.5) * 2.5)


def test_deactivate_is_the_zero_rule():
    lm = make("llama")
    layers = chosen(lm)
    with torch.no_grad():
        with deactivate(lm, layers):
            a = lm.model(input_ids=IDS, use_cache=False).logits
        with Intervention([Edit("zero", layers)]).apply(lm):
            b = lm.model(input_ids=IDS, use_cache=False).logits
    assert torch.equal(a, b)


def test_save_load_roundtrip_and_refusals(tmp_path):
    lm = make("llama")
    iv = Intervention([Edit("zero", chosen(lm)), edit_for("set", chosen(lm))], "generated", {"model": lm.meta})
    path = iv.save(tmp_path / "iv.json")
    back = Intervention.load(path)
    assert back.positions == "generated" and [e.rule for e in back.edits] == ["zero", "set"]
    assert all(torch.equal(a, b) for a, b in zip(back.edits[1].values, iv.edits[1].values))
    with torch.no_grad(), back.apply(lm):
        a = lm.model(input_ids=IDS, use_cache=False).logits
    with torch.no_grad(), iv.apply(lm):
        b = lm.model(input_ids=IDS, use_cache=False).logits
    assert torch.equal(a, b)
    other = make("gpt2")
    with pytest.raises(LanglocError, match="made for"):
        with back.apply(other):
            pass
    (tmp_path / "bad.json").write_text('{"kind": "langloc.intervention", "format_version": 2, "edits": [{"rule": "set"}]}')
    with pytest.raises(LanglocError, match="damaged intervention"):
        Intervention.load(tmp_path / "bad.json")


@pytest.mark.parametrize("bad, message", [
    (lambda L: Edit("flip", L), "unknown intervention rule"),
    (lambda L: Edit("set", L), "needs values"),
    (lambda L: Edit("set", L, [torch.ones(1)] * len(L)), "values for 3 neurons"),
    (lambda L: Edit("add", L, [torch.full((len(i),), float("nan")) for i in L]), "finite"),
    (lambda L: Intervention([Edit("zero", L)], "middle"), "unknown position mode"),
])
def test_bad_interventions_get_clear_errors(bad, message):
    lm = make("llama")
    with pytest.raises(LanglocError, match=message):
        bad(chosen(lm))


def test_neuron_outside_the_model_is_refused():
    lm = make("llama")
    layers = [torch.tensor([WIDTH + 5])] * LAYERS
    with pytest.raises(LanglocError, match="outside"):
        with Intervention([Edit("zero", layers)]).apply(lm):
            pass


# -- residual-stream edits (DiffMean steering) ---------------------------------------------------
def residual_edit(lm, layers=(1,), scale=0.5, seed=0):
    from langloc.intervene import ResidualEdit

    g = torch.Generator().manual_seed(seed)
    H = lm.model.config.hidden_size
    return ResidualEdit.at(lm.num_layers, {l: scale * torch.randn(H, generator=g) for l in layers},
                           {"method": "test"})


def layer_outputs(lm, ids, iv=None):
    """Each decoder layer's output (the residual stream) on one plain forward pass."""
    import contextlib

    outs = []
    ctx = iv.apply(lm) if iv is not None else contextlib.nullcontext()
    with ctx:
        hs = [layer.register_forward_hook(lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o).clone()))
              for layer in lm.layers]  # registered after the intervention's hooks: sees their result
        with torch.no_grad():
            lm.model(input_ids=ids, use_cache=False)
        for h in hs:
            h.remove()
    return outs


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_edit_adds_its_vector_to_the_chosen_layer_output(arch):
    from langloc.intervene import ResidualEdit

    lm = make(arch)
    base = layer_outputs(lm, IDS)
    edit = residual_edit(lm, layers=(0,))
    got = layer_outputs(lm, IDS, Intervention([edit]))
    torch.testing.assert_close(got[0], base[0] + edit.vectors[0], rtol=0, atol=1e-6)
    assert not torch.equal(got[-1], base[-1])  # later layers see the changed stream
    assert isinstance(edit, ResidualEdit) and edit.steered_layers == [0]


@pytest.mark.parametrize("arch", ARCHS)
def test_removed_residual_intervention_leaves_logits_bit_identical(arch):
    lm = make(arch)
    with torch.no_grad():
        before = lm.model(input_ids=IDS, use_cache=False).logits.clone()
        for positions in ("all", "prompt", "generated"):
            iv = Intervention([residual_edit(lm, layers=(0, 1))], positions)
            with iv.apply(lm):
                changed = lm.model(input_ids=IDS, use_cache=False).logits
                lm.model.generate(input_ids=IDS[:, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
            if positions != "generated":
                assert not torch.equal(changed, before), positions
        after = lm.model(input_ids=IDS, use_cache=False).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in lm.layers)
    assert not lm.body._forward_pre_hooks and not lm.model._forward_pre_hooks


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_residual_edit_position_modes_during_generate(positions):
    lm = make("llama")
    edit = residual_edit(lm, layers=(1,))
    seen = []
    plain = []
    for iv, store in ((None, plain), (Intervention([edit], positions), seen)):
        import contextlib

        with (iv.apply(lm) if iv else contextlib.nullcontext()):
            h = lm.layers[1].register_forward_hook(lambda m, a, o: store.append(
                (o[0] if isinstance(o, tuple) else o).clone()))
            with torch.no_grad():
                lm.model.generate(input_ids=IDS[:, :5], max_new_tokens=3, do_sample=False, pad_token_id=0)
            h.remove()
    changed_prefill = not torch.equal(seen[0], plain[0])
    assert changed_prefill == (positions == "prompt")
    if positions == "generated":
        # the first step after the prompt is steered (the prompt pass itself was not)
        torch.testing.assert_close(seen[1], plain[1] + edit.vectors[1], rtol=0, atol=1e-6)


def _decode(lm, prompt, tokens, layer, iv=None):
    """Layer ``layer``'s output and the logits of every pass: the prompt pass with ``iv``
    applied (if given), then ``tokens`` fed one at a time on its KV cache with the model as it
    is (no intervention): what an unsteered model computes after a steered prefix."""
    outs = []

    def capture():  # registered after the intervention's hooks: sees their result
        return lm.layers[layer].register_forward_hook(
            lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o).clone()))

    with torch.no_grad():
        with (iv.apply(lm) if iv is not None else contextlib.nullcontext()):
            h = capture()
            first = lm.model(input_ids=prompt, use_cache=True)
            h.remove()
        h = capture()
        key = cache_keyword(lm.model)  # the output's field is named as the keyword
        cache, logits = getattr(first, key), [first.logits[:, -1]]
        for t in range(tokens.shape[1] - 1):
            step = lm.model(input_ids=tokens[:, t:t + 1], use_cache=True, **{key: cache})
            cache = getattr(step, key)
            logits.append(step.logits[:, -1])
        h.remove()
    return outs, logits


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_prompt_mode_leaves_the_generated_steps_alone(arch):
    """Steering the residual stream at the prompt positions only: every generated step's hidden
    state and logits are those of the unsteered model continuing the same steered prefix (its
    KV cache); with ``all`` they are not, so the comparison can tell the two apart."""
    lm = make(arch)
    edit = residual_edit(lm, layers=(0, 1), scale=2.0)
    prompt = IDS[:, :5]
    runs = {}
    for positions in ("prompt", "all"):
        seen = []
        with Intervention([edit], positions).apply(lm):
            h = lm.layers[1].register_forward_hook(lambda m, a, o: seen.append(
                (o[0] if isinstance(o, tuple) else o).clone()))  # after the edit's hook: sees its result
            with torch.no_grad():
                out = lm.model.generate(input_ids=prompt, max_new_tokens=4, do_sample=False, pad_token_id=0,
                                        output_logits=True, return_dict_in_generate=True)
            h.remove()
        new = out.sequences[:, prompt.shape[1]:]
        ref, ref_logits = _decode(lm, prompt, new, 1, Intervention([edit], positions))
        runs[positions] = (seen, list(out.logits), ref, ref_logits, new)
    seen, logits, ref, ref_logits, new = runs["prompt"]
    assert len(seen) == len(ref) == 4 and [s.shape[1] for s in seen] == [5, 1, 1, 1]
    for got, want in zip(seen, ref):  # the prompt pass steered alike, then the unsteered steps
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(logits, ref_logits):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    plain, _ = _decode(lm, prompt, new, 1)
    assert not torch.allclose(seen[0], plain[0], atol=1e-3)  # the prompt was steered ...
    assert not torch.allclose(seen[1], plain[1], atol=1e-3)  # ... and the steps see it through the cache
    seen_all, _, ref_all, _, _ = runs["all"]
    assert all(not torch.allclose(g, w, atol=1e-3) for g, w in zip(seen_all[1:], ref_all[1:]))  # all: steps steered


def test_residual_edit_save_load_roundtrip_and_refusals(tmp_path):
    from langloc.intervene import ResidualEdit

    lm = make("llama")
    iv = Intervention([residual_edit(lm, layers=(0, 2)), edit_for("set", chosen(lm))], "all", {"model": lm.meta})
    back = Intervention.load(iv.save(tmp_path / "iv.json"))
    assert [e.rule for e in back.edits] == ["residual_add", "set"]
    assert back.edits[0].steered_layers == [0, 2] and back.count() == iv.count() == 6
    with torch.no_grad(), back.apply(lm):
        a = lm.model(input_ids=IDS, use_cache=False).logits
    with torch.no_grad(), iv.apply(lm):
        b = lm.model(input_ids=IDS, use_cache=False).logits
    assert torch.equal(a, b)
    wrong = ResidualEdit.at(lm.num_layers, {0: torch.ones(lm.model.config.hidden_size + 1)})
    with pytest.raises(LanglocError, match="width"):
        with Intervention([wrong]).apply(lm):
            pass
    with pytest.raises(LanglocError, match="outside"):
        ResidualEdit.at(lm.num_layers, {lm.num_layers: torch.ones(4)})
    with pytest.raises(LanglocError, match="finite"):
        ResidualEdit.at(lm.num_layers, {0: torch.full((lm.model.config.hidden_size,), float("inf"))})
