"""From the figures of one language to its row of validation.csv and its verdict line.

The rules (fixed before any result was seen; docs/validate.md explains them):

* **selective**: the own-language ratio's 95% interval lies above the interval of every other
  language: ``own_lo`` above the largest upper bound over the other languages (which need not
  be the upper bound of the largest ratio: a smaller ratio can have a wider interval; an
  interval that is missing counts as unbounded).
* **stable**: at least 80% of the set's neurons are in its stable core (found in >= 80% of the
  shard resamples), for the method the set was made with.
* **beats a control**: ``own_lo`` is above both the control's interval (``ratio_hi``, the mean
  over draws) and its largest draw.
* **holds on the second domain**: selective there by the same rule.
* **spill-over** onto the language with the largest other ratio, when that ratio's interval
  lies above 1.01 (at least +1% perplexity: smaller effects are reported, not called spill-over); it **comes from the shared part** when zeroing the shared part alone raises
  that language's ratio with an interval above the exclusive part's (and vice versa); else
  from both (intervals overlap).
* **always-on neurons**: neurons of the set active on at least 90% of the tokens of every
  language.
"""

from __future__ import annotations

import math

STABLE_SHARE = 0.8
ALWAYS_ON = 0.9
SPILL_MIN = 1.01  # spill-over: the other language's interval lies above +1% perplexity


def _x(v: float) -> str:
    return "n/a" if v is None or v != v else f"×{v:.2f}"


def _ci(lo: float, hi: float) -> str:
    return "" if lo != lo else f" [{lo:.2f}, {hi:.2f}]"


def by_condition(rows) -> dict:
    return {(r.deactivated, r.evaluated): r for r in rows}


def largest_other(table: dict, cond: str, lang: str, langs: list[str]):
    others = [table[(cond, e)] for e in langs if e != lang and (cond, e) in table]
    return max(others, key=lambda r: r.ratio) if others else None


def _upper(row) -> float:
    hi = row.ratio_hi
    return math.inf if hi is None or hi != hi else hi  # no interval: nothing bounds it


def largest_upper(table: dict, cond: str, lang: str, langs: list[str]):
    """The other language's row whose interval reaches highest (largest ``ratio_hi``)."""
    others = [table[(cond, e)] for e in langs if e != lang and (cond, e) in table]
    return max(others, key=_upper) if others else None


def selective(own, top) -> bool:
    """``own``'s interval lies above ``top``'s, the largest upper bound of the other languages."""
    return own is not None and top is not None and own.ratio_lo > _upper(top)


def beats(own, control) -> bool | None:
    if control is None:
        return None
    top = max(control.ratio_hi, control.ratio_max if control.ratio_max is not None else -math.inf)
    return own.ratio_lo > top


def spill_source(excl, shared) -> str:
    if shared is None and excl is None:
        return "none"
    if shared is None:
        return "exclusive"
    if excl is None:
        return "shared"
    if shared.ratio_lo > excl.ratio_hi:
        return "shared"
    if excl.ratio_lo > shared.ratio_hi:
        return "exclusive"
    return "both"


def language_row(lang: str, langs: list[str], table: dict, controls: dict, domain: dict | None,
                 stab: dict | None, sizes: dict, always_on: int) -> dict:
    """One row of validation.csv (see docs/validate.md for the columns)."""
    own = table[(lang, lang)]
    other = largest_other(table, lang, lang, langs)
    top = largest_upper(table, lang, lang, langs)
    row = {"language": lang, **sizes, "always_on": always_on,
           "shard_jaccard": stab["shard_jaccard"] if stab else math.nan,
           "shard_jaccard_min": stab["shard_jaccard_min"] if stab else math.nan,
           "stable_core": stab["stable_core"] if stab else math.nan,
           "own_ratio": own.ratio, "own_lo": own.ratio_lo, "own_hi": own.ratio_hi,
           "other_language": other.evaluated if other else "", "other_ratio": other.ratio if other else math.nan,
           "other_lo": other.ratio_lo if other else math.nan, "other_hi": other.ratio_hi if other else math.nan,
           "other_hi_max": _upper(top) if top else math.nan, "other_hi_max_language": top.evaluated if top else ""}
    row["selective"] = selective(own, top)
    for kind in ("matched", "random"):
        c = controls.get((f"{kind}:{lang}", lang))
        row.update({f"{kind}_ratio": c.ratio if c else math.nan, f"{kind}_lo": c.ratio_lo if c else math.nan,
                    f"{kind}_hi": c.ratio_hi if c else math.nan,
                    f"{kind}_min": c.ratio_min if c else math.nan, f"{kind}_max": c.ratio_max if c else math.nan,
                    f"{kind}_draws": c.draws if c else 0, f"beats_{kind}": beats(own, c)})
    if domain:
        d_own = domain[(lang, lang)]
        d_other = largest_other(domain, lang, lang, langs)
        d_top = largest_upper(domain, lang, lang, langs)
        row.update({"domain_own_ratio": d_own.ratio, "domain_own_lo": d_own.ratio_lo, "domain_own_hi": d_own.ratio_hi,
                    "domain_other_language": d_other.evaluated if d_other else "",
                    "domain_other_ratio": d_other.ratio if d_other else math.nan,
                    "domain_other_lo": d_other.ratio_lo if d_other else math.nan,
                    "domain_other_hi": d_other.ratio_hi if d_other else math.nan,
                    "domain_other_hi_max": _upper(d_top) if d_top else math.nan,
                    "domain_selective": selective(d_own, d_top)})
    spill = other if other is not None and other.ratio_lo > SPILL_MIN else None
    excl = table.get((f"exclusive:{lang}", spill.evaluated)) if spill else None
    shared = table.get((f"shared:{lang}", spill.evaluated)) if spill else None
    row.update({"spill_language": spill.evaluated if spill else "",
                "spill_exclusive_ratio": excl.ratio if excl else math.nan,
                "spill_exclusive_lo": excl.ratio_lo if excl else math.nan,
                "spill_exclusive_hi": excl.ratio_hi if excl else math.nan,
                "spill_shared_ratio": shared.ratio if shared else math.nan,
                "spill_shared_lo": shared.ratio_lo if shared else math.nan,
                "spill_shared_hi": shared.ratio_hi if shared else math.nan,
                "spill_from": spill_source(excl, shared) if spill else "none"})
    own_excl = table.get((f"exclusive:{lang}", lang))
    own_shared = table.get((f"shared:{lang}", lang))
    row.update({"own_exclusive_ratio": own_excl.ratio if own_excl else math.nan,
                "own_shared_ratio": own_shared.ratio if own_shared else math.nan})
    row["stable"] = bool(stab) and stab["stable_core"] == stab["stable_core"] and stab["stable_core"] >= STABLE_SHARE
    row["verdict"] = verdict(row, stab is not None, domain is not None)
    return row


def _reach(r: dict) -> str:
    """Where another language's interval reaches higher than the largest ratio's: say so."""
    lang = r.get("other_hi_max_language", "")
    if not lang or lang == r["other_language"]:
        return ""
    hi = r["other_hi_max"]
    return f"; upper bound {hi:.2f} on {lang}" if math.isfinite(hi) else f"; no interval on {lang}"


def verdict(r: dict, has_stability: bool, has_domain: bool) -> str:
    """The plain-words line of one language."""
    lang = r["language"]
    if r["set_size"] == 0:
        return f"{lang}: empty set, nothing to validate"
    other = r["other_language"]
    parts = [f"{lang}: {'selective' if r['selective'] else 'not selective'} (own {_x(r['own_ratio'])}"
             f"{_ci(r['own_lo'], r['own_hi'])} vs {_x(r['other_ratio'])}{_ci(r['other_lo'], r['other_hi'])} on {other}"
             f"{_reach(r)})"]
    if has_stability:
        core, jac = r["stable_core"], r["shard_jaccard"]  # NaN (n/a) for empty sets
        parts.append(f"{'stable' if r['stable'] else 'unstable'} (core {'n/a' if core != core else f'{core:.0%}'}, "
                     f"shard Jaccard {'n/a' if jac != jac else f'{jac:.2f}'})")
    ctl = []
    for kind in ("matched", "random"):
        if r[f"{kind}_draws"]:
            word = "beats" if r[f"beats_{kind}"] else "does not beat"
            ctl.append(f"{word} the {kind} control ({_x(r[f'{kind}_ratio'])}, draws "
                       f"{r[f'{kind}_min']:.2f}-{r[f'{kind}_max']:.2f})")
    parts += ctl
    if has_domain:
        parts.append(f"{'holds' if r['domain_selective'] else 'does not hold'} on the second domain "
                     f"({_x(r['domain_own_ratio'])} vs {_x(r['domain_other_ratio'])} on {r['domain_other_language']})")
    if r["spill_language"]:
        source = {"shared": "from the shared neurons", "exclusive": "from the exclusive neurons",
                  "both": "from both parts (intervals overlap)", "none": "(neither part measured)"}[r["spill_from"]]
        parts.append(f"spill-over onto {r['spill_language']} {_x(r['other_ratio'])} {source} "
                     f"(shared {_x(r['spill_shared_ratio'])}, exclusive {_x(r['spill_exclusive_ratio'])})")
    else:
        parts.append("no spill-over")
    if r["always_on"]:
        parts.append(f"{r['always_on']} always-on neuron(s) in the set")
    return "; ".join(parts)
