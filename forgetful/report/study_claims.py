"""The study's claims, each decided by what it says and no more.

Verdicts: *supported* (the 95% interval lies on the claimed side of zero), *contradicted*
(on the other side), *inconclusive* (it covers zero), from forgetful.report.stats.
- (a) narrow single-task tuning lowers abilities it did not train: replay=0's change
  elsewhere, claimed below zero.
- (b) replay reduces that forgetting: every replay ratio against replay=0, paired by seed,
  claimed above zero. Tested largest ratio first and down while each holds (a fixed-
  sequence procedure, Maurer, Hothorn & Lehmacher 1995: no correction needed); the claim's
  verdict is the largest ratio's, and the smallest ratio that helps is the last that held.
- (c) LoRA forgets less than full fine-tuning at comparable gain: decided only when the
  gains are shown comparable (an equivalence test on the learning difference within
  ±study.equivalence_margin, two one-sided 5% tests); otherwise no verdict, both numbers
  given.
- (d) forgetting grows with LoRA rank: the slope of the change elsewhere on log2 rank over
  every rank, claimed below zero.
- (e) at matched learning, interpolation forgets no more than replay: the narrow replay=0
  model merged at strength α (WiSE-FT) against replay. Each replay ratio is matched with the
  α of the strength curve (α = 1 included) whose mean learning is nearest; the pair is
  decided only when its gains are shown comparable (as in (c)), and then by
  non-inferiority: supported when the 95% interval of interpolation − replay on the change
  elsewhere lies above −study.equivalence_margin (interpolation forgets at most that much
  more), contradicted when it lies below zero and reaches past −margin, else inconclusive.
  The claim's verdict is the largest ratio's pair (fixed beforehand, like (b)'s order).
- A/A: the default LoRA over two disjoint seed sets must come out inconclusive on
  learning and elsewhere; the report says so in bold when it does not.
Every inconclusive comparison carries its power (stats.power): the smallest difference
the design detects at 80% power, and the seeds or items that would detect min_effect.
Each claim also carries what the previous method said (`previous`), for the side-by-side.
"""

from __future__ import annotations

import math
from typing import Any

from forgetful.report import stats
from forgetful.report.study import Run, paired, trend, unpaired

NO_VERDICT = "no verdict (gains not comparable)"


def signed(x: float | None) -> str:
    """A change in points, with its sign (never "-0.0")."""
    return "–" if x is None else f"{round(100 * x, 1) + 0.0:+.1f}"


def interval(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "–"
    return f"{signed(m['value'])} [{signed(m['ci'][0])}, {signed(m['ci'][1])}]"


def old_verdict(ci: list[float] | None, claimed: str) -> str:
    """The previous report's words: "not supported" where the interval lay on the other
    side (it meant contradicted)."""
    word = stats.verdict(ci, claimed)
    return "not supported" if word == "contradicted" else word


def with_power(cmp: dict[str, Any], claimed: str, min_effect: float) -> dict[str, Any]:
    cmp["claimed"] = claimed
    cmp["verdict"] = stats.verdict(cmp.get("ci"), claimed)
    if cmp["verdict"] == "inconclusive":
        cmp["power"] = stats.power(cmp, min_effect)
    return cmp


def claim_a(points: dict[str, Any], narrow: str | None) -> dict[str, Any]:
    text = "(a) narrow single-task tuning lowers abilities it did not train"
    if narrow not in points:
        return {"claim": text, "verdict": "not measured", "evidence": "no replay=0 point",
                "comparisons": [], "previous": {"verdict": "not measured"}}
    p = points[narrow]
    m = p["elsewhere"]
    return {"claim": text, "verdict": stats.verdict(m["ci"], "below"),
            "evidence": f"{narrow}: change elsewhere {interval(m)} points (general suite "
                        f"{interval(p['general'])}, untrained tasks {interval(p['untrained'])}); "
                        f"learning {interval(p['learning'])}; {m['seeds']} seeds, "
                        f"{m.get('items')} items, variance mostly {m.get('dominant')}",
            "comparisons": [],
            "previous": {"interval": interval(m.get("previous")),
                         "verdict": old_verdict((m.get("previous") or {}).get("ci"), "below")}}


def claim_b(runs: list[Run], points: dict[str, Any], ratios: dict[float, str],
            narrow: str | None, min_effect: float) -> dict[str, Any]:
    text = "(b) replay reduces that forgetting"
    with_replay = sorted(((r, c) for r, c in ratios.items() if r > 0 and c in points),
                         reverse=True)
    if narrow not in points or not with_replay:
        return {"claim": text, "verdict": "not measured", "comparisons": [],
                "evidence": "needs replay=0 and a replay ratio above 0",
                "previous": {"verdict": "not measured"}}
    comps = [with_power(paired(runs, c, narrow, "elsewhere"), "above", min_effect)
             for _, c in with_replay]
    held = []
    for (ratio, _), cmp in zip(with_replay, comps, strict=True):
        if cmp["verdict"] != "supported":
            break
        held.append(ratio)
    each = "; ".join(f"{cmp['a']}: {interval(cmp)} ({cmp['verdict']})" for cmp in comps)
    largest = comps[0]
    return {"claim": text, "verdict": largest["verdict"], "comparisons": comps,
            "evidence": f"change elsewhere against {narrow}, paired by seed, largest ratio "
                        f"first: {each} points; "
                        + (f"the smallest ratio that helps: {min(held)}" if held else
                           "no ratio is shown to help"),
            "previous": {"interval": interval(largest["previous"]),
                         "verdict": old_verdict(largest["previous"]["ci"], "above")}}


def claim_c(runs: list[Run], points: dict[str, Any], margin: float, min_effect: float
            ) -> dict[str, Any]:
    text = "(c) LoRA forgets less than full fine-tuning at comparable gain"
    if "method=lora" not in points or "method=full" not in points:
        return {"claim": text, "verdict": "not measured", "comparisons": [],
                "evidence": "needs method=lora and method=full",
                "previous": {"verdict": "not measured"}}
    forget = with_power(paired(runs, "method=lora", "method=full", "elsewhere"), "above",
                        min_effect)
    gain = with_power(paired(runs, "method=lora", "method=full", "learning"), "above",
                      min_effect)
    gain["equivalence"] = stats.equivalent(gain, margin)
    same = gain["equivalence"]["equivalent"]
    ci90 = gain["equivalence"]["ci90"]
    return {"claim": text, "verdict": forget["verdict"] if same else NO_VERDICT,
            "comparisons": [forget, gain],
            "evidence": f"LoRA − full, paired by seed: learning {interval(gain)} points, "
                        f"90% interval [{signed(ci90[0])}, {signed(ci90[1])}] "
                        + (f"inside ±{100 * margin:.0f} points: gains comparable"
                           if same else f"not inside ±{100 * margin:.0f} points "
                                        "(study.equivalence_margin): gains not shown "
                                        "comparable, so the forgetting difference decides "
                                        "nothing about this claim")
                        + f"; change elsewhere {interval(forget)} points ({forget['verdict']}"
                          " as a difference)",
            "previous": {"interval": interval(forget["previous"]),
                         "verdict": old_verdict(forget["previous"]["ci"], "above")}}


def claim_d(runs: list[Run], points: dict[str, Any], ranks: dict[int, str],
            min_effect: float) -> dict[str, Any]:
    text = "(d) forgetting grows with LoRA rank"
    present = {r: c for r, c in sorted(ranks.items()) if c in points}
    if len(present) < 2:
        return {"claim": text, "verdict": "not measured", "comparisons": [],
                "evidence": "needs two ranks", "previous": {"verdict": "not measured"}}
    slope = with_power(trend(runs, {math.log2(r): c for r, c in present.items()},
                             "elsewhere"), "below", min_effect)
    slope.update(a="slope on log2 rank", b=", ".join(f"r={r}" for r in present))
    (r_lo, lo), (r_hi, hi) = list(present.items())[0], list(present.items())[-1]
    ends = paired(runs, lo, hi, "elsewhere")
    by_rank = ", ".join(f"r={r}: {signed(points[c]['elsewhere']['value'])}"
                        for r, c in present.items())
    return {"claim": text, "verdict": slope["verdict"], "comparisons": [slope],
            "evidence": f"change elsewhere by rank: {by_rank} points; slope over all "
                        f"{len(present)} ranks, per doubling of the rank: {interval(slope)} "
                        f"points (below zero: more forgetting at higher rank)",
            "previous": {"interval": f"rank {r_lo} − rank {r_hi}: {interval(ends['previous'])}",
                         "verdict": old_verdict(ends["previous"]["ci"], "above")}}


def noninferior(cmp: dict[str, Any], margin: float) -> str:
    """A − B is not below −margin (supported), shown below zero and not shown within the
    margin (contradicted), or neither (inconclusive)."""
    lo, hi = cmp["ci"]
    if lo > -margin:
        return "supported"
    return "contradicted" if hi < 0 else "inconclusive"


def matched(points: dict[str, Any], curve: dict[float, str], target: str) -> float:
    """The α of the curve whose mean learning is nearest the target configuration's (the
    larger α on a tie)."""
    goal = points[target]["learning"]["value"]
    return min(curve, key=lambda a: (abs(points[curve[a]]["learning"]["value"] - goal), -a))


def claim_e(runs: list[Run], points: dict[str, Any], strengths: dict[str, dict[float, str]],
            ratios: dict[float, str], narrow: str | None, margin: float, min_effect: float
            ) -> dict[str, Any]:
    text = "(e) at matched learning, interpolation forgets no more than replay"
    curve = {a: c for a, c in (strengths.get(narrow or "") or {}).items() if c in points}
    with_replay = sorted(((r, c) for r, c in ratios.items() if r > 0 and c in points),
                         reverse=True)
    if len(curve) < 2 or not with_replay:
        return {"claim": text, "verdict": "not measured", "comparisons": [],
                "evidence": "needs replay=0 at a strength below 1 (study.strengths) and a "
                            "replay ratio above 0", "previous": {"verdict": "not run before"}}
    comps, verdicts, each = [], [], []
    for ratio, config in with_replay:
        alpha = matched(points, curve, config)
        forget = with_power(paired(runs, curve[alpha], config, "elsewhere"), "above",
                            min_effect)
        gain = with_power(paired(runs, curve[alpha], config, "learning"), "above", min_effect)
        gain["equivalence"] = stats.equivalent(gain, margin)
        forget["claimed"] = f"above −{100 * margin:.0f} (no more forgetting)"
        forget["verdict"] = noninferior(forget, margin) \
            if gain["equivalence"]["equivalent"] else NO_VERDICT
        comps += [forget, gain]
        verdicts.append(forget["verdict"])
        ci90 = gain["equivalence"]["ci90"]
        each.append(f"replay {ratio:g} against α = {alpha:g} (nearest learning): learning "
                    f"{interval(gain)}, 90% [{signed(ci90[0])}, {signed(ci90[1])}] "
                    + ("comparable" if gain["equivalence"]["equivalent"] else
                       "not shown comparable")
                    + f"; change elsewhere {interval(forget)} ({forget['verdict']})")
    return {"claim": text, "verdict": verdicts[0], "comparisons": comps,
            "evidence": "interpolation − replay, paired by seed: " + "; ".join(each)
                        + f" points. Gains comparable: 90% interval inside "
                          f"±{100 * margin:.0f} points (study.equivalence_margin); then "
                          f"supported when interpolation forgets at most "
                          f"{100 * margin:.0f} points more (95%)",
            "previous": {"verdict": "not run before"}}


def guard(runs: list[Run], points: dict[str, Any], aa: str, min_effect: float
          ) -> dict[str, Any] | None:
    """The A/A comparison: method=lora at its seeds against the same configuration at
    other seeds. Anything but inconclusive is a false positive."""
    if aa not in points or "method=lora" not in points:
        return None
    comps = [with_power(unpaired(runs, "method=lora", aa, m), "above", min_effect)
             for m in ("learning", "elsewhere")]
    false = [c for c in comps if c["verdict"] != "inconclusive"]
    return {"claim": "A/A: the default LoRA against itself on other seeds (must be "
                     "inconclusive)",
            "verdict": "inconclusive, as it must be" if not false else
            "FALSE POSITIVE: an interval excludes zero",
            "false_positive": bool(false), "comparisons": comps,
            "evidence": "; ".join(f"{c['measure']}: {interval(c)} points" for c in comps),
            "previous": {"verdict": "not run before"}}


def claims(runs: list[Run], points: dict[str, Any], ranks: dict[int, str],
           ratios: dict[float, str], margin: float, min_effect: float, aa: str,
           strengths: dict[str, dict[float, str]] | None = None) -> list[dict[str, Any]]:
    """The five claims and the A/A guard, from what the study ran (a claim whose
    configurations were not run says so)."""
    narrow = ratios.get(0.0)
    found = [claim_a(points, narrow), claim_b(runs, points, ratios, narrow, min_effect),
             claim_c(runs, points, margin, min_effect),
             claim_d(runs, points, ranks, min_effect),
             claim_e(runs, points, strengths or {}, ratios, narrow, margin, min_effect)]
    check = guard(runs, points, aa, min_effect)
    return found + ([check] if check else [])
