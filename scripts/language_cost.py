"""Which languages a model reads: the cost of the same content per language (run: python scripts/language_cost.py).

Prints, per Bible language, the per-token perplexity of 1,024 packed held-out tokens and the
model's NLL of the same 48 aligned held-out verses relative to English. Used to choose the
languages of docs/claims.md §1 (per-token perplexity cannot rank languages across scripts).
"""
import math, torch, torch.nn.functional as F
from langloc.models.loading import load_model
from langloc.data import load_corpus, corpus_windows
from langloc.data.bible import bible_verses
from langloc.evaluate.perplexity import window_nll
lm = load_model("smollm2-135m", dtype="float32")
c = load_corpus("bible")
langs="en zh fr es ru ja ar hi vi id de pt it ko tr bn fa sw uk pl ro tl".split()
common = set(bible_verses("en", "eval"))
for l in langs: common &= set(bible_verses(l, "eval"))
keys = sorted(common)[:48]
def nats(l):
    tot = 0.0
    for k in keys:
        ids = lm.tokenizer(bible_verses(l, "eval")[k], return_tensors="pt").input_ids
        if lm.add_bos: ids = torch.cat([torch.tensor([[lm.tokenizer.bos_token_id]]), ids], 1)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids).logits[0, :-1]
        tot += F.cross_entropy(logits.float(), ids[0, 1:], reduction="sum").item()
    return tot
en = nats("en")
for l in langs:
    n = en if l == "en" else nats(l)
    w = corpus_windows(lm, c, l, "eval", window=256, max_tokens=1024)
    ppl = math.exp(window_nll(lm, w, 2).sum().item() / w[:, 1:].numel())
    print(l, round(ppl, 1), round(n / en, 3), flush=True)
