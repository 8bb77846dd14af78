"""The architecture table names, for every supported model_type, the module whose output is a
layer's MLP neurons and the projection that reads them back, as transformers builds it today.

Every entry of ARCHITECTURES is checked on a tiny random-weight model of that type (see
``tiny_model`` in conftest.py); a new entry without a tiny config fails here.
"""

from __future__ import annotations

import functools

import pytest
import torch

from conftest import CharTokenizer, expected_width, tiny_model
from langloc.errors import LanglocError
from langloc.models import architectures
from langloc.models.architectures import ARCHITECTURES, NeuronSite, site_for
from langloc.models.loading import ALIASES, bind

LAYERS = 3
WIDTH = 48
BATCH, SEQ = 2, 7
TYPES = sorted(ARCHITECTURES)
GATED_SPEC = "layers:mlp.act_fn:mlp.down_proj"


@functools.lru_cache(maxsize=None)
def _bound(model_type: str):
    """A bound tiny model per type, shared by the tests below (none of them changes weights)."""
    return bind(tiny_model(model_type, layers=LAYERS, width=WIDTH), CharTokenizer(), f"tiny-{model_type}")


def _ids() -> torch.Tensor:
    return torch.randint(3, CharTokenizer().vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))


def _run(lm, forward_hooks=None, down_pre_hooks=None, times: int = 1) -> None:
    """Run the decoder body on a [2, 7] batch ``times`` times with the given hooks attached."""
    handles = []
    try:
        for k, module in enumerate(lm.neuron_modules):
            if forward_hooks is not None:
                handles.append(module.register_forward_hook(functools.partial(forward_hooks, k)))
        for k, module in enumerate(lm.down_modules):
            if down_pre_hooks is not None:
                handles.append(module.register_forward_pre_hook(functools.partial(down_pre_hooks, k)))
        with torch.no_grad():
            for _ in range(times):
                lm.body(input_ids=_ids())
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("model_type", TYPES)
def test_tiny_config_exists_for_every_table_entry_and_has_that_model_type(model_type):
    assert _bound(model_type).model.config.model_type == model_type


@pytest.mark.parametrize("model_type", TYPES)
def test_neuron_site_found_once_per_layer_with_width_I(model_type):
    lm = _bound(model_type)
    assert lm.num_layers == LAYERS == len(lm.layers)
    assert len(lm.neuron_modules) == len(lm.down_modules) == LAYERS
    assert len({id(m) for m in lm.neuron_modules}) == LAYERS, "neuron modules must be distinct per layer"
    assert len({id(m) for m in lm.down_modules}) == LAYERS, "down projections must be distinct per layer"
    for layer, neuron, down in zip(lm.layers, lm.neuron_modules, lm.down_modules):
        assert layer.get_submodule(lm.site.neuron) is neuron
        assert layer.get_submodule(lm.site.down) is down
        # The neurons are an activation's output, not a projection's (e.g. not up_proj / c_fc).
        assert not any(True for _ in neuron.parameters()), f"{type(neuron).__name__} has weights"
    assert lm.intermediate_size == expected_width(model_type, WIDTH)
    assert lm.meta["neuron_site"] == ARCHITECTURES[model_type].spec()
    assert lm.meta["num_layers"] == LAYERS and lm.meta["adds_bos"] is True


@pytest.mark.parametrize("model_type", TYPES)
def test_neuron_hooks_fire_once_per_layer_per_forward_with_last_dim_I(model_type):
    lm = _bound(model_type)
    width = lm.intermediate_size
    seen: list[tuple[int, tuple]] = []
    _run(lm, forward_hooks=lambda k, mod, inp, out: seen.append((k, tuple(out.shape))), times=2)
    assert [k for k, _ in seen] == list(range(LAYERS)) * 2, "each layer's hook fires exactly once per forward"
    for _, shape in seen:
        # [B, T, I] for most architectures; OPT flattens to [B*T, I] around its MLP.
        assert shape in {(BATCH, SEQ, width), (BATCH * SEQ, width)}, shape


@pytest.mark.parametrize("model_type", TYPES)
def test_table_quirks_are_what_the_model_of_that_type_has(model_type):
    """flat, conv1d and writes in the table match the modules a tiny model of the type builds,
    so the table cannot drift from transformers."""
    lm = _bound(model_type)
    site = ARCHITECTURES[model_type]
    assert lm.site == site
    dims: list[int] = []
    _run(lm, forward_hooks=lambda k, mod, inp, out: dims.append(out.dim()))
    assert set(dims) == {2 if site.flat else 3}, f"{model_type}: flat={site.flat} but the neurons have {dims} dims"
    hidden = lm.model.get_input_embeddings().weight.shape[1]
    for layer in lm.layers:
        matrices = [(name, m) for name, m in layer.named_modules()
                    if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2]
        assert matrices
        writers = 0
        for name, m in matrices:
            assert (type(m).__name__ == "Conv1D") == site.conv1d, f"{model_type}: {name} is {type(m).__name__}"
            out_axis, in_axis = (1, 0) if site.conv1d else (0, 1)
            if site.writes_residual(name):
                writers += 1
                assert m.weight.shape[out_axis] == hidden, f"{model_type}: {name} is said to write the residual stream"
            else:
                assert m.weight.shape[in_axis] == hidden, f"{model_type}: {name} is said to read the residual stream"
        assert writers == 2, f"{model_type}: expected the attention output and the down projection to write"
        assert site.writes_residual(site.down)


@pytest.mark.parametrize("model_type", TYPES)
def test_neuron_hooks_see_batch_positions_neurons_and_can_replace_them(model_type):
    from langloc.models.hooks import neuron_hooks

    lm = _bound(model_type)
    shapes: list[tuple] = []
    down_inputs: list[torch.Tensor] = []

    def zero(a):
        shapes.append(tuple(a.shape))
        return torch.zeros_like(a)

    fns = {k: zero for k in range(LAYERS)}
    with neuron_hooks(lm, fns), neuron_hooks(lm, {k: down_inputs.append for k in range(LAYERS)}, at="down"):
        with torch.no_grad():
            lm.body(input_ids=_ids())
    assert shapes == [(BATCH, SEQ, lm.intermediate_size)] * LAYERS
    assert [tuple(x.shape) for x in down_inputs] == [(BATCH, SEQ, lm.intermediate_size)] * LAYERS
    assert all(not x.any() for x in down_inputs), "zeroed neurons feed W_out zeros (gated: act(gate) * up = 0)"
    assert lm.down_weight(0).shape == (lm.model.get_input_embeddings().weight.shape[1], lm.intermediate_size)


@pytest.mark.parametrize("model_type", TYPES)
def test_zeroed_neurons_zero_exactly_their_columns_of_the_down_projection_input(model_type):
    """The hooked module is what feeds W_out, and neuron j is column j of its input.

    For gated MLPs the down input is act(gate) * up, so a zeroed act output zeroes it too.
    """
    lm = _bound(model_type)
    width = lm.intermediate_size
    zeroed = torch.arange(width) % 2 == 0  # zero the even neurons, keep the odd ones

    def zero_some(k, mod, inp, out):
        out = out.clone()
        out[..., zeroed] = 0
        return out

    baseline: dict[int, torch.Tensor] = {}
    patched: dict[int, torch.Tensor] = {}

    def record(store):
        return lambda k, mod, args: store.__setitem__(k, args[0].detach().clone())

    _run(lm, down_pre_hooks=record(baseline))
    _run(lm, forward_hooks=zero_some, down_pre_hooks=record(patched))
    assert sorted(baseline) == sorted(patched) == list(range(LAYERS)), "every down projection runs"
    for k in range(LAYERS):
        assert patched[k].shape[-1] == width and patched[k].numel() == BATCH * SEQ * width
        assert baseline[k][..., zeroed].abs().sum() > 0, "the unpatched input is not already zero"
        assert torch.all(patched[k][..., zeroed] == 0), f"layer {k}: zeroed neurons still reach W_out"
        assert patched[k][..., ~zeroed].abs().sum() > 0, f"layer {k}: the kept neurons vanished too"

    # Zeroing every neuron zeroes the whole down input.
    everything: dict[int, torch.Tensor] = {}
    _run(lm, forward_hooks=lambda k, mod, inp, out: torch.zeros_like(out), down_pre_hooks=record(everything))
    for k in range(LAYERS):
        assert torch.all(everything[k] == 0)


@pytest.mark.parametrize("model_type", TYPES)
def test_down_input_is_the_neuron_output_itself_unless_the_site_is_gated(model_type):
    lm = _bound(model_type)
    neurons: dict[int, torch.Tensor] = {}
    down_in: dict[int, torch.Tensor] = {}
    _run(
        lm,
        forward_hooks=lambda k, mod, inp, out: neurons.__setitem__(k, out.detach().clone()),
        down_pre_hooks=lambda k, mod, args: down_in.__setitem__(k, args[0].detach().clone()),
    )
    for k in range(LAYERS):
        a, b = neurons[k].reshape(-1, lm.intermediate_size), down_in[k].reshape(-1, lm.intermediate_size)
        if lm.site.gated:
            assert not torch.equal(a, b), f"{model_type} is marked gated but W_out reads the activation directly"
        else:
            assert torch.equal(a, b), f"{model_type} is not marked gated but W_out reads something else"


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_built_in_alias_is_an_architecture_of_the_table(alias):
    """gemma-3-270m is gemma3_text, smollm2-135m llama, qwen2.5-coder-1.5b qwen2: each is a row
    of the table, so every test above runs on a tiny model of its type (test_gemma.py and
    test_qwen.py check the real models' types where they are installed)."""
    assert ALIASES[alias].model_type in TYPES


def test_qwen2_layers_read_the_residual_through_biased_q_k_v_into_a_gated_mlp():
    """What Qwen2.5 (the qwen2.5-coder-1.5b alias) adds to a Llama layer is biases on q, k and v;
    they change no axis, so q/k/v still read the residual stream and o_proj/down_proj write it."""
    lm = _bound("qwen2")
    attention = lm.layers[0].self_attn
    assert all(getattr(attention, name).bias is not None for name in ("q_proj", "k_proj", "v_proj"))
    assert attention.o_proj.bias is None
    assert lm.site.gated and not lm.site.writes_residual("self_attn.q_proj")
    assert lm.site.writes_residual("self_attn.o_proj") and lm.site.writes_residual("mlp.down_proj")


def test_unknown_model_type_error_lists_supported_architectures_and_names_neuron_site():
    with pytest.raises(LanglocError) as err:
        site_for("no_such_architecture")
    message = str(err.value)
    assert "no_such_architecture" in message
    assert "--neuron-site" in message
    for model_type in ARCHITECTURES:
        assert model_type in message


def test_site_for_parses_an_explicit_site_and_prefers_it_over_the_table():
    site = site_for("llama", GATED_SPEC)
    assert site == NeuronSite("layers", "mlp.act_fn", "mlp.down_proj")
    assert (site.layers, site.neuron, site.down) == ("layers", "mlp.act_fn", "mlp.down_proj")
    assert site.spec() == GATED_SPEC
    assert site_for("no_such_architecture", "h:mlp.act:mlp.c_proj") == NeuronSite("h", "mlp.act", "mlp.c_proj")
    given = NeuronSite("h", "mlp.act", "mlp.c_proj")
    assert site_for("llama", given) is given


@pytest.mark.parametrize(
    "spec", ["", "layers", "layers:mlp.act_fn", "a:b:c:d", "layers::mlp.down_proj", ":mlp.act_fn:mlp.down_proj"]
)
def test_malformed_neuron_site_is_a_langloc_error(spec):
    with pytest.raises(LanglocError, match="--neuron-site"):
        site_for("llama", spec)


def test_explicit_neuron_site_binds_a_model_missing_from_the_table(monkeypatch):
    monkeypatch.delitem(architectures.ARCHITECTURES, "llama")
    model = tiny_model("llama", layers=LAYERS, width=WIDTH)
    with pytest.raises(LanglocError, match="--neuron-site"):
        bind(model, CharTokenizer(), "tiny-llama")
    lm = bind(model, CharTokenizer(), "tiny-llama", neuron_site=GATED_SPEC)
    assert lm.num_layers == LAYERS and lm.intermediate_size == WIDTH
    assert [m is layer.mlp.act_fn for m, layer in zip(lm.neuron_modules, lm.layers)] == [True] * LAYERS
    assert [m is layer.mlp.down_proj for m, layer in zip(lm.down_modules, lm.layers)] == [True] * LAYERS
    assert lm.meta["neuron_site"] == GATED_SPEC
    fired: list[int] = []
    _run(lm, forward_hooks=lambda k, mod, inp, out: fired.append(k))
    assert fired == list(range(LAYERS))


def test_explicit_neuron_site_with_a_wrong_path_is_a_langloc_error():
    model = tiny_model("llama", layers=LAYERS, width=WIDTH)
    with pytest.raises(LanglocError, match="mlp.no_such_module"):
        bind(model, CharTokenizer(), "tiny-llama", neuron_site="layers:mlp.no_such_module:mlp.down_proj")
