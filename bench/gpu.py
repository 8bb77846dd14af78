"""The GPU check: collection on Llama-shaped models at about 1B and 8B parameters, one run.

    python bench/gpu.py                 # on a CUDA device: the 1B and 8B shapes (at most ~8 minutes)
    python bench/gpu.py --tiny          # a tiny shape; automatic where no CUDA device is visible
    python bench/gpu.py --tiny --gloo   # ... with the 2-process check on CPU (what the test suite runs)

The models are built from a LlamaConfig with random weights (nothing is downloaded), in
bfloat16 with PyTorch's scaled-dot-product attention (SDPA), on random token windows. For each
shape and each of two batch sizes it measures, in alternating rounds (bench/collect.py's
pieces, so the ratios mean what they mean there):

* bare     - the decoder body alone (no hooks, no LM head): the physical limit, tokens/s;
* collect  - langloc's collection (the same forward with the counting hooks), tokens/s;
* collect / bare, and the peak GPU memory of those rounds (torch.cuda.max_memory_allocated).

Where two GPUs are visible (or with --gloo, two CPU processes) it also runs ``langloc collect``
on the smallest measured shape in this process and ``langloc collect`` under ``torchrun
--nproc-per-node 2``, and checks that the statistics are equal bit for bit.
It prints a table headed by the machine (langloc/machine.py: CPU class, GPU name) and, with
--json, writes the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from collect import alternating_rates, bare_forward, counted_forward  # bench/collect.py
from langloc import machine
from langloc.models.loading import bind
from langloc.data import FolderCorpus
from langloc.stats import ActivationStats, CollectConfig, collect

# Llama 3.2 1B (tied embeddings, 1.24B parameters) and Llama 3.1 8B (8.03B) as shapes only.
SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False),
}
# Per device: windows of WINDOW tokens, ROUND windows per timed round, the two batch sizes.
PLAN = {"cuda": dict(window=512, windows=32, batches=(4, 16), repeats=3),
        "cpu": dict(window=32, windows=16, batches=(1, 4), repeats=2)}
BOS = 1


def byte_tokenizer():
    """A byte-level tokenizer (256 bytes + 3 specials): any shape's vocabulary holds its ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": BOS, "</s>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build(shape: str, device: str, tokenizer):
    """A random-weight Llama of ``shape`` in bfloat16 with SDPA attention, bound for collection."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=BOS, eos_token_id=2,
                         pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: an 8B model never passes through host memory
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers chose {model.config._attn_implementation!r} attention, not sdpa")
    return bind(model, tokenizer, shape)


def windows(lm, plan: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, lm.model.config.vocab_size, (plan["windows"], plan["window"]), generator=g)
    ids[:, 0] = BOS
    return ids.to(lm.device)


def measure(lm, plan: dict) -> list[dict]:
    """bare and collect tokens/s, collect / bare and peak memory at each of the plan's batch sizes."""
    ids, cuda = windows(lm, plan), lm.device.type == "cuda"
    rows = []
    for batch in plan["batches"]:
        batches = list(ids.split(batch))
        if cuda:
            torch.cuda.reset_peak_memory_stats(lm.device)
        rates = alternating_rates([("bare", bare_forward(lm, batches))], counted_forward(lm, batches),
                                  ids.numel(), plan["repeats"], lm.device)
        bare, coll = statistics.median(rates["bare"]), statistics.median(rates["collect"]["bare"])
        rows.append({"batch": batch, "tokens": ids.numel(), "bare": bare, "collect": coll, "ratio": coll / bare,
                     "peak_gib": torch.cuda.max_memory_allocated(lm.device) / 2**30 if cuda else None})
    return rows


def parameters(lm) -> int:
    return sum(p.numel() for p in lm.model.parameters())  # tied embeddings are one parameter


def _corpus(folder: Path) -> Path:
    """Two languages of seeded pseudo-text: with random weights the words do not matter, only
    that both runs tokenise the same stream into the same windows."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    letters = {"en": "etaoinshrdlu", "fr": "esaitnrulodé"}
    for lang, alphabet in letters.items():
        lines = []
        for _ in range(400):
            lengths = torch.randint(2, 9, (12,), generator=g).tolist()
            picks = torch.randint(0, len(alphabet), (sum(lengths),), generator=g).tolist()
            chars = [alphabet[i] for i in picks]
            words, at = [], 0
            for n in lengths:
                words.append("".join(chars[at:at + n]))
                at += n
            lines.append(" ".join(words))
        (folder / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def same_bits(a: ActivationStats, b: ActivationStats) -> bool:
    fields = ("n", "over_zero", "active_sum", "act_sum", "resid_sum")
    return a.languages == b.languages and all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


def two_process_check(lm, plan: dict, work: Path) -> dict:
    """langloc's collection in this process and ``langloc collect`` under ``torchrun
    --nproc-per-node 2`` on the same model (saved to ``work``) and text: equal bits?"""
    cpu = lm.device.type == "cpu"
    model, corpus = work / "model", _corpus(work / "corpus")
    lm.model.save_pretrained(model)
    lm.tokenizer.save_pretrained(model)
    window, batch = plan["window"], min(plan["batches"])  # 4 batches per language: 2 per process
    tokens, langs = window * 4 * batch, ["en", "fr"]
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if cpu else threads)  # on CPU one thread per process: the same kernels, the same bits
    try:
        one = collect(lm, FolderCorpus(corpus), CollectConfig(out=work / "one", languages=langs, tokens=tokens,
                                                              window=window, batch_size=batch), progress=False)
    finally:
        torch.set_num_threads(threads)
    args = ["collect", "-m", str(model), "--corpus", str(corpus), "-l", ",".join(langs), "--dtype", "bfloat16",
            "--tokens", str(tokens), "--window", str(window), "--batch-size", str(batch),
            *(["--device", "cpu"] if cpu else []), "-o", str(work / "two")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": "1"} if cpu else {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "langloc.cli", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun ... langloc collect failed: {done.stderr.strip()[-2000:]}")
    two = ActivationStats.load(work / "two")
    return {"equal": same_bits(one, two), "backend": "gloo" if cpu else "nccl", "tokens": int(one.n.sum()),
            "seconds": time.perf_counter() - started}


def table(results: dict) -> str:
    lines = [f"{'shape':9s} {'params':>7s} {'batch':>5s} {'bare tok/s':>11s} {'collect tok/s':>13s} "
             f"{'collect/bare':>12s} {'peak GiB':>8s}"]
    for shape, r in results["shapes"].items():
        for row in r["rows"]:
            peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
            lines.append(f"{shape:9s} {r['params'] / 1e9:6.2f}B {row['batch']:5d} {row['bare']:11.0f} "
                         f"{row['collect']:13.0f} {row['ratio']:12.3f} {peak:>8s}")
    check = results.get("two_process")
    if check is None:
        lines.append("2-process collect: not run (fewer than two GPUs visible; --gloo runs it on CPU)")
    else:
        lines.append(f"2-process collect ({check['backend']}, torchrun, {check['tokens']} tokens): "
                     f"{'equal bit for bit to one process' if check['equal'] else 'DIFFERS from one process'} "
                     f"({check['seconds']:.0f} s)")
    return "\n".join(lines)


def run(tiny: bool, gloo: bool) -> dict:
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    shapes = ["tiny"] if device == "cpu" else ["llama-1b", "llama-8b"]
    plan, tokenizer = PLAN[device], byte_tokenizer()
    started = time.perf_counter()
    results: dict = {"machine": machine.describe(), "summary": machine.summary(), "device": device,
                     "dtype": "bfloat16", "attention": "sdpa", "window": plan["window"], "shapes": {}}
    if device == "cuda":
        results["device_name"] = torch.cuda.get_device_name(0)
    for shape in shapes:
        lm = build(shape, device, tokenizer)
        results["shapes"][shape] = {"params": parameters(lm), "rows": measure(lm, plan)}
        if shape == shapes[0] and (gloo and device == "cpu" or device == "cuda" and torch.cuda.device_count() >= 2):
            with tempfile.TemporaryDirectory(prefix="langloc-gpu-check-") as work:
                results["two_process"] = two_process_check(lm, plan, Path(work))
        del lm
        if device == "cuda":
            torch.cuda.empty_cache()
    results["seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny shape on CPU (automatic without CUDA)")
    ap.add_argument("--gloo", action="store_true", help="on CPU, also run the 2-process check with gloo")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    results = run(args.tiny, args.gloo)
    print(results["summary"])
    where = results.get("device_name", "CPU")
    print(f"device {results['device']} ({where}), bfloat16, SDPA attention, random-weight Llama shapes, "
          f"windows of {results['window']} random tokens; {results['seconds']:.0f} s in all")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if "two_process" in results and not results["two_process"]["equal"]:
        sys.exit(1)
    if not all(math.isfinite(row["ratio"]) for r in results["shapes"].values() for row in r["rows"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
