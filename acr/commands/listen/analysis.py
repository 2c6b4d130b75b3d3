"""The analysis of listening tests, for `acr analyze`: rater screening, scores per setting with
confidence intervals, the tests between settings, agreement, and human scores against every
per-clip metric. `listening_summary` returns what analyze adds to summary.json, report.md and
plots/ (None when no test of the run has answers).

- Screening (ITU-T P.808 practice, ITU-R BS.1534-3 post-screening): a rater is excluded when
  more than 15% of their attention checks fail. A repeated MOS trial fails when its quality
  differs by more than 1; a repeated A/B pair when the other clip is preferred; a repeated MUSHRA
  trial when its scores differ by more than 20 points on average; a MUSHRA hidden reference when
  it scores below 90. Repeats are checks only: scores come from first presentations.
- MOS (P.800): per setting, the mean over prompts (clip ratings averaged per prompt first) with
  a bootstrap CI over prompts, and the mean over raters with a bootstrap CI over raters;
  Friedman / Wilcoxon-Holm over prompts as for the objective metrics.
- A/B: the win matrix (a "no preference" counts half to each side), Bradley-Terry strengths with
  percentile CIs from resampling raters, and a two-sided sign test per pair of settings (ties
  left out) with Holm correction.
- MUSHRA: as MOS on the 0-100 scale; the hidden reference and the anchor are listed, not tested.
- Agreement: Krippendorff's alpha (ordinal) over the included raters' first ratings (A/B coded
  -1 / 0 / +1 for the pair's first setting).
- Human vs objective: Spearman's rho between the per-clip human score (mean rating, or the A/B
  win rate) and every numeric column of metrics.csv, with Bonett-Wright CIs and Holm over metrics.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from acr.commands.listen.design import Design, list_tests
from acr.commands.listen.responses import load_responses
from acr.core import console, stats
from acr.core.errors import UsageError

EXCLUDE_SHARE = 0.15  # BS.1534-3: exclude when more than 15% of the checks fail
MOS_REPEAT_TOLERANCE = 1
MUSHRA_REPEAT_TOLERANCE = 20.0
BT_PRIOR = 0.5  # wins each way added to compared pairs when the plain MLE does not exist
BT_BOOTSTRAP = 500
NOT_METRICS = {"path", "model", "parameter_set", "prompt_set", "prompt_index", "sample_index",
               "prompt", "image", "key", "flags"}


@dataclass
class ListeningSummary:
    summary: dict  # summary.json's "listening" section: test name -> results
    report_lines: list[str]
    plots: list[Path] = field(default_factory=list)


@dataclass
class Rating:
    """One first-presentation answer of an included rater."""

    rater: str
    trial: dict
    answer: dict


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "big")


def _labels_to_clips(trial: dict) -> dict[str, str]:
    return {c["label"]: c["clip"] for c in trial["clips"]}


def _preferred(trial: dict, answer: dict) -> str | None:
    """The clip id an A/B answer prefers (None: no preference)."""
    choice = answer["choice"]
    return None if choice == "none" else _labels_to_clips(trial)[choice]


def _scores_by_clip(trial: dict, answer: dict) -> dict[str, float]:
    labels = _labels_to_clips(trial)
    return {labels[label]: float(score) for label, score in answer["scores"].items()}


def screen(design: Design, response: dict) -> dict:
    """The attention checks of one submission and whether its rater is excluded."""
    trials = {t["id"]: t for t in design.trials(response["slot"])}
    answers = {a["id"]: a["answer"] for a in response["trials"]}
    checks = []
    for trial_id, trial in trials.items():
        if trial["repeat_of"]:
            first, again = trials[trial["repeat_of"]], trial
            a, b = answers[first["id"]], answers[trial_id]
            if design.kind == "mos":
                passed = abs(a["quality"] - b["quality"]) <= MOS_REPEAT_TOLERANCE
            elif design.kind == "ab":
                one, two = _preferred(first, a), _preferred(again, b)
                passed = one is None or two is None or one == two
            else:
                one, two = _scores_by_clip(first, a), _scores_by_clip(again, b)
                passed = float(np.mean([abs(one[c] - two[c]) for c in one])) <= \
                    MUSHRA_REPEAT_TOLERANCE
            checks.append({"trial": trial_id, "kind": "repeat", "passed": bool(passed)})
        if design.kind == "mushra" and design.data.get("reference_min") is not None:
            scores = _scores_by_clip(trial, answers[trial_id])
            hidden = [c for c in scores if design.clip(c)["role"] == "hidden_reference"]
            checks.append({"trial": trial_id, "kind": "hidden_reference",
                           "passed": all(scores[c] >= design.data["reference_min"]
                                         for c in hidden)})
    failed = sum(not c["passed"] for c in checks)
    return {"rater": response["rater"], "file": response["file"], "slot": response["slot"],
            "checks": len(checks), "failed": failed,
            "excluded": bool(checks) and failed / len(checks) > EXCLUDE_SHARE}


def _ratings(design: Design, responses: list[dict], screened: list[dict]) -> list[Rating]:
    out = []
    for response, check in zip(responses, screened):
        if check["excluded"]:
            continue
        trials = {t["id"]: t for t in design.trials(response["slot"])}
        for given in response["trials"]:
            trial = trials[given["id"]]
            if not trial["repeat_of"]:
                out.append(Rating(check["rater"], trial, given["answer"]))
    return out


def _unique_raters(responses: list[dict]) -> None:
    """Give every submission its own rater name (the same name twice gets #2, #3, ...)."""
    seen: dict[str, int] = {}
    for response in responses:
        name = response["rater"]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            response["rater"] = f"{name}#{seen[name]}"


def _describe_by(values: list[tuple[str, str, float]], setting: str, seed: str) -> dict:
    """Mean of (setting, unit, value) rows: values averaged per unit first, CI over units."""
    units: dict[str, list[float]] = {}
    for s, unit, value in values:
        if s == setting:
            units.setdefault(unit, []).append(value)
    return stats.describe([float(np.mean(v)) for v in units.values()], seed=_seed(seed, setting))


def _score_section(design: Design, rows: list[tuple[dict, str, float]], key: str,
                   groups: list[str], tested: list[str]) -> dict:
    """Per setting: by prompt and by rater; the paired tests over prompts.
    rows: (clip record, rater, score)."""
    by_prompt = [(c["setting"], c["block"], v) for c, _, v in rows]
    by_rater = [(c["setting"], r, v) for c, r, v in rows]
    section = {"by_prompt": {s: _describe_by(by_prompt, s, f"{design.name}/{key}/prompt")
                             for s in groups},
               "by_rater": {s: _describe_by(by_rater, s, f"{design.name}/{key}/rater")
                            for s in groups},
               "ratings": {s: sum(1 for c, _, _ in rows if c["setting"] == s) for s in groups}}
    table: dict[str, dict[str, list[float]]] = {s: {} for s in tested}
    for clip, _, value in rows:
        if clip["setting"] in table:
            table[clip["setting"]].setdefault(clip["block"], []).append(value)
    section["tests"] = stats.paired_tests({s: {b: float(np.mean(v)) for b, v in t.items()}
                                           for s, t in table.items()})
    return section


def _per_clip(rows: list[tuple[dict, str, float]]) -> dict[str, float]:
    """Mean score per clip path (run clips only)."""
    values: dict[str, list[float]] = {}
    for clip, _, value in rows:
        if clip["path"]:
            values.setdefault(clip["path"], []).append(value)
    return {path: float(np.mean(v)) for path, v in values.items()}


def _alpha(rows: list[tuple[str, str, float]]) -> dict:
    """Krippendorff's alpha (ordinal) of (rater, unit, value) rows."""
    raters = sorted({r for r, _, _ in rows})
    units = sorted({u for _, u, _ in rows})
    matrix = np.full((len(raters), len(units)), np.nan)
    for rater, unit, value in rows:
        matrix[raters.index(rater), units.index(unit)] = value
    value = stats.krippendorff_alpha(matrix, "ordinal") if rows else None
    return {"alpha": value, "level": "ordinal", "raters": len(raters), "units": len(units),
            "note": None if value is not None else "undefined: needs two raters on a shared "
                                                   "unit and more than one value"}


def _ab_section(design: Design, ratings: list[Rating]) -> tuple[dict, dict[str, float], dict]:
    settings = design.settings
    index = {s: i for i, s in enumerate(settings)}
    wins = np.zeros((len(settings), len(settings)))
    per_rater: dict[str, np.ndarray] = {}
    appearances: dict[str, list[float]] = {}
    alpha_rows = []
    pairs: dict[tuple[str, str], list[int]] = {}
    items = {i["id"]: i for i in design.data["items"]}
    for rating in ratings:
        first, second = items[rating.trial["item"]]["clips"]
        a, b = index[design.clip(first)["setting"]], index[design.clip(second)["setting"]]
        winner = _preferred(rating.trial, rating.answer)
        mine = per_rater.setdefault(rating.rater, np.zeros_like(wins))
        share = {first: 0.5, second: 0.5} if winner is None else \
            {first: float(winner == first), second: float(winner == second)}
        for matrix in (wins, mine):
            matrix[a, b] += share[first]
            matrix[b, a] += share[second]
        for clip, value in share.items():
            path = design.clip(clip)["path"]
            appearances.setdefault(path, []).append(value)
        alpha_rows.append((rating.rater, rating.trial["item"],
                           0.0 if winner is None else (1.0 if winner == first else -1.0)))
        key = (settings[min(a, b)], settings[max(a, b)])
        counts = pairs.setdefault(key, [0, 0, 0])  # wins of key[0], of key[1], ties
        if winner is None:
            counts[2] += 1
        else:
            counts[0 if index[design.clip(winner)["setting"]] == min(a, b) else 1] += 1
    section: dict = {"settings": settings, "wins": wins.tolist(),
                     "comparisons": int(len(ratings))}
    if len(ratings):
        prior = BT_PRIOR if stats.bt_needs_prior(wins) else 0.0
        strengths = stats.bradley_terry(wins, prior=prior)
        raters = list(per_rater)
        boot = []
        if len(raters) >= 2:
            rng = np.random.default_rng(_seed(design.name, "bt"))
            for _ in range(BT_BOOTSTRAP):
                sample = sum(per_rater[raters[i]] for i in rng.integers(0, len(raters),
                                                                        len(raters)))
                if (sample + sample.T).sum() == 0:
                    continue
                boot.append(stats.bradley_terry(
                    sample, prior=BT_PRIOR if stats.bt_needs_prior(sample) else 0.0,
                    tolerance=1e-8))
        low, high = (np.percentile(boot, [2.5, 97.5], axis=0) if len(boot) > 1
                     else (np.full(len(settings), np.nan),) * 2)
        section["bradley_terry"] = {
            s: {"strength": float(strengths[i]), "ci95": [float(low[i]), float(high[i])],
                "win_share": float(wins[i].sum() / max((wins[i] + wins[:, i]).sum(), 1e-12))}
            for i, s in enumerate(settings)}
        section["bt_prior"] = prior
        section["bt_ci"] = f"percentile bootstrap over raters ({len(boot)} resamples)" \
            if len(boot) > 1 else "needs 2 or more raters"
    tests, raw = [], []
    for (a, b), (wa, wb, ties) in pairs.items():
        p = float(scipy_stats.binomtest(wa, wa + wb).pvalue) if wa + wb else float("nan")
        tests.append({"a": a, "b": b, "a_wins": wa, "b_wins": wb, "ties": ties, "p": p})
        raw.append(p)
    for test, adjusted in zip(tests, stats.holm(raw)):
        test["p_holm"] = None if np.isnan(adjusted) else adjusted
        test["significant"] = bool(test["p_holm"] is not None and test["p_holm"] < stats.ALPHA)
    section["pairs"] = tests
    human = {path: float(np.mean(v)) for path, v in appearances.items() if path}
    return section, human, _alpha(alpha_rows)


def correlations(human: dict[str, float], rows: list[dict]) -> dict:
    """Spearman's rho of a per-clip human score with every numeric metric, Holm over metrics."""
    by_path = {row["path"]: row for row in rows}
    paths = [p for p in human if p in by_path]
    metrics = [m for m in (rows[0] if rows else {}) if m not in NOT_METRICS]
    out = {}
    for metric in metrics:
        values = np.array([_number(by_path[p].get(metric)) for p in paths])
        if np.isfinite(values).sum() >= 1:
            out[metric] = stats.spearman(np.array([human[p] for p in paths]), values)
    for (metric, result), adjusted in zip(list(out.items()),
                                          stats.holm([r["p"] if r["p"] is not None
                                                      else float("nan") for r in out.values()])):
        result["p_holm"] = None if np.isnan(adjusted) else adjusted
    return out


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def analyse_test(design: Design, rows: list[dict]) -> dict:
    """Everything about one test (summary.json's listening.<name>)."""
    responses, skipped = load_responses(design)
    _unique_raters(responses)
    screened = [screen(design, r) for r in responses]
    ratings = _ratings(design, responses, screened)
    result: dict = {"design": design.kind, "settings": design.settings,
                    "responses": len(responses), "skipped_files": skipped,
                    "raters": len(responses) - sum(s["excluded"] for s in screened),
                    "screening": screened,
                    "excluded": [s["rater"] for s in screened if s["excluded"]]}
    if not ratings:
        result["note"] = "no ratings from included raters"
        return result
    human: dict[str, dict[str, float]] = {}
    if design.kind in ("mos", "mushra"):
        keys = ["quality", "match"] if design.kind == "mos" else ["score"]
        groups = design.settings + ([r for r in ("hidden_reference", "anchor")
                                     if design.data.get("reference_min") is not None]
                                    if design.kind == "mushra" else [])
        for key in keys:
            rows_key = []
            for rating in ratings:
                if design.kind == "mos":
                    if key in rating.answer:
                        clip = design.clip(rating.trial["clips"][0]["clip"])
                        rows_key.append((clip, rating.rater, float(rating.answer[key])))
                else:
                    for clip_id, value in _scores_by_clip(rating.trial, rating.answer).items():
                        rows_key.append((design.clip(clip_id), rating.rater, value))
            if not rows_key:
                continue
            result[key] = _score_section(design, rows_key, key, groups, design.settings)
            human[key] = _per_clip(rows_key)
            if key in ("quality", "score"):
                result["agreement"] = _alpha([(r, c["path"], v) for c, r, v in rows_key
                                              if c["role"] == "sample"])
    else:
        result["ab"], human["win_rate"], result["agreement"] = _ab_section(design, ratings)
    result["human_vs_metrics"] = {key: correlations(values, rows)
                                  for key, values in human.items()}
    return result


def listening_summary(run_dir: Path, rows: list[dict], plots_dir: Path
                      ) -> ListeningSummary | None:
    """The listening tests of a run that have answers, analysed next to the per-clip metrics
    (`rows`: metrics.csv's rows, `path` relative to the run); None when there are none."""
    from acr.commands.listen.plots import draw_test
    from acr.commands.listen.report import render_test

    try:
        tests = [t for t in list_tests(run_dir) if any((t.folder / "responses").glob("*.json"))]
    except UsageError as exc:  # a damaged design.json: the rest of the analysis goes on
        console.warn(f"listening tests not analysed: {exc}")
        return None
    if not tests:
        return None
    summary, lines, plots = {}, ["## Listening tests", ""], []
    for design in tests:
        result = analyse_test(design, rows)
        summary[design.name] = result
        drawn = draw_test(design, result, plots_dir)
        plots += drawn
        lines += render_test(design, result, drawn, plots_dir.parent)
    return ListeningSummary(summary, lines, plots)
