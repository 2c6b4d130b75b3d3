"""Simulated raters for the listening-test tests: answers a design as a rater with a known taste
would, in the page's response format (what the browser tests produce by clicking)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REFERENCE_SCORE, ANCHOR_SCORE = 96, 12


def answers(test_dir: Path, slot: int, rater: str, taste: dict[str, float], noise: float = 0.0,
            seed: int = 0, careless: bool = False) -> dict:
    """A complete submission for `slot`: each clip rated by its setting's `taste` (1-5 for mos,
    0-100 for mushra; A/B prefers the higher taste) plus Gaussian `noise`; a careless rater
    answers at random (and fails the attention checks)."""
    design = json.loads((Path(test_dir) / "design.json").read_text())
    rng = np.random.default_rng([seed, slot])
    items = {i["id"]: i for i in design["items"]}
    given = {}
    trials = []
    for trial in design["slots"][slot]:
        settings = {c["label"]: design["clips"][c["clip"]]["setting"] for c in trial["clips"]}
        if design["design"] == "mos":
            setting = settings["A"]
            if careless:
                quality = 1 if trial["repeat_of"] else 5
            else:
                quality = int(np.clip(round(taste[setting] + rng.normal(0, noise)), 1, 5))
            if trial["repeat_of"] and not careless:
                quality = given[trial["repeat_of"]]["quality"]
            answer = {"quality": quality}
            if items[trial["item"]]["prompt"]:
                answer["match"] = int(np.clip(round(taste[setting] + rng.normal(0, noise)), 1, 5))
        elif design["design"] == "ab":
            a, b = taste[settings["A"]], taste[settings["B"]]
            if careless:
                choice = "A"  # always the left clip: the swapped repeat gives it away
            else:
                choice = "none" if a == b else ("A" if a > b else "B")
            answer = {"choice": choice}
        else:
            scores = {}
            for label, setting in settings.items():
                if setting == "hidden_reference":
                    value = 20 if careless else REFERENCE_SCORE
                elif setting == "anchor":
                    value = ANCHOR_SCORE
                else:
                    value = taste[setting] + rng.normal(0, noise)
                if careless:
                    value = rng.integers(0, 101) if setting != "hidden_reference" else value
                scores[label] = int(np.clip(round(value), 0, 100))
            answer = {"scores": scores}
        given[trial["id"]] = answer
        labels = list(settings)
        trials.append({"id": trial["id"], "answer": answer, "time_ms": 4000 + len(trials),
                       "plays": {k: 1 for k in labels}, "played_to_end": {k: True for k in labels}})
    return {"format": "acr-listening-response/1", "test": design["name"],
            "design_id": design["id"], "slot": slot, "rater": rater,
            "started": "2026-01-01T10:00:00Z", "finished": "2026-01-01T10:05:00Z",
            "user_agent": "simulated", "trials": trials}
