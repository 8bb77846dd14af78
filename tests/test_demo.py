"""The demo's time estimate and its summary line."""

from types import SimpleNamespace

from conftest import CharTokenizer, tiny_model
from langloc.demo import DemoConfig, Estimate, cost_per_token, own_language_most
from langloc.models.loading import bind


def test_cost_per_token_counts_the_layers_matrices_and_the_head():
    lm = bind(tiny_model("llama", layers=3, width=48), CharTokenizer(), "tiny-llama")
    cfg = lm.model.config
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * 48  # q, o; k, v; gate, up, down
    assert cost_per_token(lm) == (3 * per_layer, cfg.vocab_size * h)


def test_estimate_from_the_second_batch_counts_every_condition(monkeypatch):
    lm = bind(tiny_model("llama", layers=3, width=48), CharTokenizer(), "tiny-llama")
    said = []
    clock = iter([10.0, 11.0])
    monkeypatch.setattr("langloc.demo.time.time", lambda: next(clock))
    cfg = DemoConfig(languages=("en", "fr", "zh"), tokens=4096, eval_tokens=512, eval_window=128, window=512)
    est = Estimate(lm, cfg, said.append)
    est(2048)  # first batch ends at t=10
    est(2048)  # second at t=11: 2048 tokens/s
    assert est.stats_tokens == 3 * 4096 and est.eval_tokens == (1 + 3 + 3 * 1) * 3 * 512
    body, head = cost_per_token(lm)
    eval_s = est.eval_tokens * (body + head) / body / 2048
    assert len(said) == 1 and f"{eval_s / 60:.0f} min for the ablation" in said[0]
    assert "2048 tokens/s" in said[0]


def test_own_language_most_counts_strict_diagonal_maxima():
    ratios = {("en", "en"): 1.0, ("en", "fr"): 1.0, ("fr", "en"): 1.1, ("fr", "fr"): 3.0}
    rows = [SimpleNamespace(deactivated=d, evaluated=e, ratio=r) for (d, e), r in ratios.items()]
    assert own_language_most(rows, ["en", "fr"]) == 1  # en's tie is not "most"


def test_estimate_counts_every_control_draw():
    lm = bind(tiny_model("llama", layers=3, width=48), CharTokenizer(), "tiny-llama")
    cfg = DemoConfig(languages=("en", "fr"), tokens=1024, eval_tokens=256, eval_window=128, control_draws=3)
    assert Estimate(lm, cfg, print).eval_tokens == (1 + 2 + 2 * 3) * 2 * 256
