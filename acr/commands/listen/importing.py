"""`acr listen import RUN FILE...`: answers downloaded from the page, checked against their
test's design.json and stored in its responses/ folder. Every file is checked before anything is
written: one bad file refuses the whole import, naming each problem."""
from __future__ import annotations

from pathlib import Path

from acr.commands.listen.design import find_test, list_tests
from acr.commands.listen.responses import (MAX_BYTES, Stored, check_response, parse_json,
                                           store_response)
from acr.core.errors import UsageError
from acr.core.runs import Run


def import_responses(run_dir: Path, files: list[Path], name: str | None = None) -> list[Stored]:
    """Check every file, then store them all; returns where each went (and whether it was new)."""
    run_dir = Path(run_dir)
    if not files:
        raise UsageError("give one or more answer files (JSON downloaded from the test page)")
    tests = {t.name: t for t in list_tests(run_dir)}
    if not tests:
        raise UsageError(f"{run_dir}: no listening test built; nothing to import into")
    fixed = find_test(run_dir, name) if name is not None else None
    problems, checked = [], []
    for file in map(Path, files):
        if not file.is_file():
            problems.append(f"{file}: no such file")
            continue
        if file.stat().st_size > MAX_BYTES:
            problems.append(f"{file}: {file.stat().st_size} bytes, more than answers ever take "
                            f"({MAX_BYTES}); not an answer file")
            continue
        data, error = parse_json(file.read_bytes())
        if error:
            problems.append(f"{file}: {error}")
            continue
        test = fixed or (tests.get(data.get("test")) if isinstance(data, dict) else None)
        if test is None:
            problems.append(f"{file}: answers for test "
                            f"{data.get('test') if isinstance(data, dict) else None!r}, which "
                            f"this run does not have (it has {', '.join(tests)})")
            continue
        found = check_response(test, data)
        problems += [f"{file}: {p}" for p in found]
        if not found:
            checked.append((test, data))
    if problems:
        raise UsageError(*problems, "nothing imported; fix or leave out the files named above")
    stored = [store_response(test, data, via="import") for test, data in checked]
    if (run_dir / "events.jsonl").is_file():
        Run(run_dir).event("listen.import", files=[s.path.name for s in stored],
                           new=sum(s.new for s in stored))
    return stored
