"""Answers of raters: checked against design.json, stored one file per submission in
RUN/listening/<name>/responses/, read back for the analysis.

A submission is refused whole (with every problem named) when it is not for this test (format,
test name, design id), names an unknown slot or trial, leaves a trial of its slot out or answers
one twice, rates out of range, or claims a rating of a clip that was not played to the end. The
stored file is named after the slot and a hash of the answers, created under a temporary name and
linked into place, which never overwrites: the same answers twice are one file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from acr.commands.listen.design import Design
from acr.commands.listen.page import RESPONSE_FORMAT
from acr.core.runs import utc_now

MAX_BYTES = 1_000_000  # one rater's answers are a few kB; anything near this is not a response
MAX_TIME_MS = 24 * 3600 * 1000
RATER_CHARS = 100


@dataclass
class Stored:
    path: Path
    new: bool  # False: the same answers were already stored


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_trial(design: Design, trial: dict, given: dict) -> list[str]:
    where = f"trial {trial['id']}"
    labels = [c["label"] for c in trial["clips"]]
    problems = []
    answer = given.get("answer")
    if not isinstance(answer, dict):
        return [f"{where}: no answer object"]
    if design.kind == "mos":
        prompt = next(i["prompt"] for i in design.data["items"] if i["id"] == trial["item"])
        for key in ["quality"] + (["match"] if prompt else []):
            if not _is_int(answer.get(key)) or not 1 <= answer[key] <= 5:
                problems.append(f"{where}: {key} must be an integer 1-5, got "
                                f"{json.dumps(answer.get(key))}")
    elif design.kind == "ab":
        allowed = labels + (["none"] if design.data["no_preference"] else [])
        if answer.get("choice") not in allowed:
            problems.append(f"{where}: choice must be one of {', '.join(allowed)}, got "
                            f"{json.dumps(answer.get('choice'))}")
    else:
        scores = answer.get("scores")
        if not isinstance(scores, dict) or sorted(scores) != sorted(labels):
            problems.append(f"{where}: scores must rate exactly the clips {', '.join(labels)}")
        else:
            bad = [k for k, v in scores.items() if not _is_int(v) or not 0 <= v <= 100]
            if bad:
                problems.append(f"{where}: scores of {', '.join(bad)} must be integers 0-100")
    plays, ended = given.get("plays"), given.get("played_to_end")
    if not isinstance(plays, dict) or any(not _is_int(plays.get(k)) or plays[k] < 0
                                          for k in labels):
        problems.append(f"{where}: plays must count each clip ({', '.join(labels)}) as an "
                        "integer >= 0")
    if not isinstance(ended, dict) or any(ended.get(k) is not True for k in labels):
        problems.append(f"{where}: every clip must have been played to the end before rating "
                        "(played_to_end)")
    time_ms = given.get("time_ms")
    if not isinstance(time_ms, (int, float)) or isinstance(time_ms, bool) or \
            not 0 <= time_ms <= MAX_TIME_MS:
        problems.append(f"{where}: time_ms must be a number of milliseconds (0 to a day)")
    return problems


def check_response(design: Design, data) -> list[str]:
    """Every problem of a submission for this test (an empty list: it is good)."""
    if not isinstance(data, dict):
        return ["not a JSON object"]
    if data.get("format") != RESPONSE_FORMAT:
        return [f"format {json.dumps(data.get('format'))}, not {RESPONSE_FORMAT}: not answers "
                "from an acr listening page"]
    if data.get("test") != design.name or data.get("design_id") != design.id:
        return [f"answers for test {json.dumps(data.get('test'))} (design "
                f"{json.dumps(data.get('design_id'))}), not for {design.name} ({design.id}): "
                "the page was built for another test, or the test was rebuilt"]
    slot = data.get("slot")
    if not _is_int(slot) or not 0 <= slot < design.slot_count:
        return [f"slot {json.dumps(slot)}: the test has slots 0-{design.slot_count - 1}"]
    rater = data.get("rater")
    if not isinstance(rater, str) or not rater.strip() or len(rater) > RATER_CHARS or \
            not rater.isprintable():
        return [f"rater must be a printable name of 1-{RATER_CHARS} characters"]
    answers = data.get("trials")
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        return ["trials must be a list of answers"]
    expected = {t["id"]: t for t in design.trials(slot)}
    problems = []
    seen: set = set()
    for given in answers:
        trial_id = given.get("id")
        if trial_id not in expected:
            problems.append(f"trial {json.dumps(trial_id)}: not a trial of slot {slot}")
        elif trial_id in seen:
            problems.append(f"trial {trial_id}: answered twice")
        else:
            seen.add(trial_id)
            problems += _check_trial(design, expected[trial_id], given)
    missing = [t for t in expected if t not in seen]
    if missing:
        problems.append(f"{len(missing)} trial(s) of slot {slot} not answered: "
                        f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return problems


def clean_response(data: dict) -> dict:
    """The fields acr keeps of a checked submission (nothing else the client sent)."""
    keep = ("format", "test", "design_id", "slot", "rater", "started", "finished", "user_agent")
    out = {k: data.get(k) for k in keep}
    for key in ("started", "finished", "user_agent"):
        if not isinstance(out[key], str):
            out[key] = None
        else:
            out[key] = out[key][:300]
    out["trials"] = [{"id": t["id"], "answer": t["answer"], "time_ms": t["time_ms"],
                      "plays": t["plays"], "played_to_end": t["played_to_end"]}
                     for t in data["trials"]]
    return out


def store_response(design: Design, data: dict, via: str) -> Stored:
    """Write a checked submission to responses/ atomically, never over another file."""
    clean = clean_response(data)
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]
    folder = design.folder / "responses"
    folder.mkdir(exist_ok=True)
    target = folder / f"slot{clean['slot']:03d}-{digest}.json"
    if target.exists():
        return Stored(target, False)
    record = {**clean, "received": utc_now(), "via": via}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        try:
            os.link(tmp, target)  # atomic, and fails rather than replace an existing file
        except FileExistsError:
            return Stored(target, False)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return Stored(target, True)


def load_responses(design: Design) -> tuple[list[dict], list[str]]:
    """The stored submissions that check out against the design, each with its file name as
    `file`, and a line for every file skipped (unreadable, or no longer matching the design)."""
    good, skipped = [], []
    folder = design.folder / "responses"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            skipped.append(f"{path.name}: unreadable ({exc})")
            continue
        problems = check_response(design, data)
        if problems:
            skipped.append(f"{path.name}: {problems[0]}")
        else:
            good.append({**data, "file": path.name})
    return good, skipped


def parse_json(raw: bytes) -> tuple[object, str | None]:
    """(data, None) or (None, the reason it is not JSON)."""
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as exc:
        return None, f"malformed JSON ({exc})"
