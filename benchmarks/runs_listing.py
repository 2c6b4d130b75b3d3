"""`acr runs` on a thousand run folders: the whole command (a new process, the CLI, the walk,
meta.json, config.yaml, analysis/summary.json of every run) against the straightforward script
(Path.rglob for every meta.json, yaml.safe_load and json.load of the same files).

The runs are hard-linked copies of one real analysed experiment (tiny-musicgen, 6 clips of 1 s: its
samples/ folder, config and analysis) with their start times edited. Prints both times and
their ratio; exits 1 if `acr runs` takes a second or more.

    python benchmarks/runs_listing.py [--runs 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """\
name: bench-runs
model: tiny-musicgen
device: cpu
samples_per_prompt: 1
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings, low cello]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
analyze: true
"""


def straightforward(root: Path) -> int:
    import yaml

    rows = []
    for meta_path in root.rglob("meta.json"):
        run = meta_path.parent
        meta = json.loads(meta_path.read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        summary_path = run / "analysis" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        rows.append((config.get("name"), meta.get("status"), len(summary)))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()

    from acr.commands.experiment import run_experiment
    from acr.core.config.loader import load_config
    from acr.core.config.schema import ExperimentConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "grid.yaml").write_text(GRID)
        source = run_experiment(load_config(ExperimentConfig, tmp / "grid.yaml"),
                                out=tmp / "source")
        root = tmp / "experiments"
        meta = json.loads((source / "meta.json").read_text())
        for index in range(args.runs):  # hard links: the same tree without 1000 copies of it
            copy = root / "bench-runs" / f"20261101T{index:06d}Z-{index:06x}"
            shutil.copytree(source, copy, copy_function=os.link)
            (copy / "meta.json").unlink()
            meta["started"] = f"2026-11-01T{index // 3600 % 24:02d}:{index // 60 % 60:02d}:" \
                              f"{index % 60:02d}Z"
            (copy / "meta.json").write_text(json.dumps(meta))

        start = time.perf_counter()
        found = straightforward(root)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "acr", "runs", str(root), "--json"],
                             capture_output=True, text=True, check=True)
        acr = time.perf_counter() - start
        assert len(json.loads(out.stdout)) == args.runs == found

    print(f"{args.runs} runs: acr runs (whole command) {acr:.2f} s; the straightforward "
          f"script (in process, no CLI start) {plain:.2f} s; ratio {plain / acr:.2f}x")
    if acr >= 1.0:
        raise SystemExit(f"acr runs took {acr:.2f} s, not under 1 s")


if __name__ == "__main__":
    main()
