"""``langloc demo``: collect -> identify (LAPE) -> ablate with random controls, on the Bible,
then the HTML report of the run (``RUN/report.html``, :mod:`langloc.report.html`).

The defaults are sized so that the whole demo, the one-time model conversion included, takes
at most 15 minutes on the slowest CPU class of this project's machines (2 cores, AVX2 only, so
float32): half the statistics and three eighths of the held-out text of the earlier defaults
(16,384 and 384 tokens per language instead of 32,768 and 1,024). docs/performance.md gives
the measurements behind them, and how much the neuron sets and the matrix move.

Before the long work starts, the demo times its first batches of statistics and prints an
estimate of the whole run (statistics plus ablation) from the model's cost per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from langloc.models.loading import DEFAULT_MODEL

DEMO_LANGUAGES = ("en", "zh", "fr", "es", "ru", "ja", "ar", "hi", "vi", "id")


@dataclass
class DemoConfig:
    out: Path = Path("langloc-demo")
    model: str = DEFAULT_MODEL
    languages: tuple[str, ...] = DEMO_LANGUAGES
    tokens: int = 16_384  # statistics tokens per language
    eval_tokens: int = 384  # held-out tokens per language for perplexity
    # Short held-out windows give the intervals 12 units per language at the same cost (the LM
    # head, per token, dominates perplexity); 8 is the fewest with an interval (docs/statistics.md).
    eval_window: int = 32
    window: int = 512  # tokens per statistics window
    batch_size: int = 4  # statistics windows per batch

    @property
    def eval_batch_size(self) -> int:
        """About 1,024 positions per LM-head call, whatever the window."""
        return max(1, 1024 // self.eval_window)
    dtype: str = "fast"
    seed: int = 0
    # One random draw per language: each further draw costs as much as the language's own set
    # (`langloc ablate` defaults to 3 and reports their range; the demo's time bound does not
    # allow it). The control still carries its interval over windows.
    control_draws: int = 1


def cost_per_token(lm) -> tuple[int, int]:
    """Multiply-adds per token of the decoder body's matrices and of the LM head.

    Statistics run the body only; perplexity runs body and head, and with a large vocabulary
    the head costs more than all layers (Gemma 3 270M: 168M vs 100M). Attention scores are
    left out: at a few hundred tokens per window they are a few percent.
    """
    body = sum(p.numel() for layer in lm.layers for p in layer.parameters() if p.dim() == 2)
    head = lm.model.get_output_embeddings().weight.numel() if lm.head_is_known else 0
    return body, head


class Estimate:
    """Times the second statistics batch (the first pays one-time allocations) and predicts
    the whole run from it: statistics at that rate, perplexity slower by the head's cost."""

    def __init__(self, lm, config: DemoConfig, say: Callable[[str], None]):
        body, head = cost_per_token(lm)
        k = len(config.languages)
        self.stats_tokens = k * (config.tokens // config.window) * config.window
        eval_windows = config.eval_tokens // config.eval_window
        # base + each language's set and its control draws, each evaluated on every language
        self.eval_tokens = (1 + k + k * config.control_draws) * k * eval_windows * config.eval_window
        self.slowdown = (body + head) / body
        self.say, self.batches, self.seen, self.t0 = say, 0, 0, None

    def __call__(self, tokens: int) -> None:
        self.batches += 1
        self.seen += tokens
        if self.batches == 1:
            self.t0 = time.time()
        elif self.batches == 2:
            rate = tokens / (time.time() - self.t0)
            left = self.stats_tokens - self.seen
            stats_s, eval_s = left / rate, self.eval_tokens * self.slowdown / rate
            self.say(f"    measured {rate:.0f} tokens/s: about {stats_s / 60:.0f} min more for statistics, "
                     f"{eval_s / 60:.0f} min for the ablation ({self.eval_tokens} tokens, head included), "
                     f"about {(stats_s + eval_s) / 60:.0f} min more in all")


def run(config: DemoConfig, say: Callable[[str], None] = print):
    """Run the demo; returns ``(rows, neuron_set, csv_path, seconds)``."""
    from langloc import machine
    from langloc.data import load_corpus
    from langloc.models import load_model
    from langloc.report.sections import write_report
    from langloc.stats import CollectConfig, collect
    from langloc.studies import ablate
    from langloc.workflows import identify_run

    start = time.time()
    langs = list(config.languages)
    corpus = load_corpus("bible")
    corpus.require_text(langs, "stats")
    lm = load_model(config.model, dtype=config.dtype)
    say(f"[bold]1/4 collect[/] {len(langs)} languages x {config.tokens} tokens on {config.model} "
        f"({lm.meta['dtype']}; CPU class {machine.cpu_class()}, {torch.get_num_threads()} threads)")
    counting = CollectConfig(out=config.out, languages=langs, tokens=config.tokens, window=config.window,
                             batch_size=config.batch_size, seed=config.seed)
    collect(lm, corpus, counting, on_batch=Estimate(lm, config, say))
    say("[bold]2/4 identify[/] LAPE neurons")
    ns, _ = identify_run(config.out)
    say(f"[bold]3/4 ablate[/] {2 * len(langs)} neuron sets x {len(langs)} languages "
        f"({config.eval_tokens} held-out tokens each)")
    m = ablate.run(lm, ablate.Config(run=Path(config.out), eval_tokens=config.eval_tokens, window=config.eval_window,
                                     batch_size=config.eval_batch_size, seed=config.seed,
                                     control_draws=config.control_draws), config.out)
    rows, csv_path = m.result, m.path
    say(f"[bold]4/4 report[/] {report_path(config)}")
    write_report([config.out], report_path(config))
    return rows, ns, csv_path, time.time() - start


def report_path(config: DemoConfig) -> Path:
    """Where the demo writes its HTML report."""
    return Path(config.out) / "report.html"


def own_language_most(rows, langs) -> int:
    """How many languages' own set raises their perplexity more than any other language's."""
    ratio = {(r.deactivated, r.evaluated): r.ratio for r in rows}
    return sum(all(ratio[(lang, lang)] > ratio[(lang, e)] for e in langs if e != lang) for lang in langs)
