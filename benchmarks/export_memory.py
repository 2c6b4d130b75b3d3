"""`acr export` streams: peak memory must not grow with the package.

Builds a run folder with 1 GB of 16-bit WAV samples (64 files of 16 MiB, with their sidecars and
an experiment.json naming them), then packages it twice, each time as a fresh process whose peak
resident memory is read from the kernel (wait4): with `acr export RUN` (entries streamed into the
zip, the manifest computed on the way) and with the straightforward alternative (read every
entry into memory, hash it, write the zip from memory; what `acr export` did before). Also
measures `acr export --verify` on the package. Prints wall time and peak RSS of each and the
memory ratio; exits 1 if `acr export` or `--verify` peaks at 400 MB or more.

    python benchmarks/export_memory.py [--gigabytes 1.0] [--limit-mb 400]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_BYTES = 16 << 20
RATE = 32000

# What `acr export` did before streaming: every entry in memory, then hashed and written.
IN_MEMORY = """
import hashlib, json, sys, zipfile
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
entries = {f"{run.parent.name}/{run.name}/{p.relative_to(run).as_posix()}": p.read_bytes()
           for p in sorted(run.rglob("*")) if p.is_file()}
files = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
         for name, data in entries.items()}
entries["MANIFEST.json"] = json.dumps({"files": files}, indent=2).encode()
with zipfile.ZipFile(out, "w") as archive:
    for name in sorted(entries):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, entries[name], compresslevel=6)
"""


def make_run(folder: Path, total_bytes: int) -> None:
    """A finished experiment run with `total_bytes` of WAV samples."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: bench\nmodel: tiny-musicgen\n")
    (folder / "meta.json").write_text(json.dumps({"command": "experiment", "argv": [
        "acr", "experiment", "bench.yaml"], "status": "completed", "seed": 1}))
    rng = np.random.default_rng(0)
    frames = FILE_BYTES // 2
    tone = (3000 * np.sin(2 * np.pi * 220 * np.arange(frames) / RATE)).astype(np.int16)
    samples = []
    for index in range(max(1, round(total_bytes / FILE_BYTES))):
        path = folder / f"samples/bench/default/set/{index}-0.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = tone + rng.integers(-2000, 2000, frames, dtype=np.int16)
        sf.write(str(path), audio, RATE, subtype="PCM_16")
        path.with_suffix(".json").write_text(json.dumps({"id": f"{index}-0", "seed": index}))
        samples.append({"id": f"bench/default/set/{index}-0",
                        "path": path.relative_to(folder).as_posix()})
    (folder / "experiment.json").write_text(json.dumps({"name": "bench", "samples": samples},
                                                       indent=2))


def measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one fresh process."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            sys.exit(f"{' '.join(command)} failed: {errors.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--limit-mb", type=float, default=400.0)
    parser.add_argument("--make-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = int(args.gigabytes * (1 << 30))
    if args.make_run:
        make_run(args.make_run, total)
        return

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench/run1"
        # in a child: a forked process starts from its parent's peak RSS, so this one stays small
        subprocess.run([sys.executable, __file__, "--gigabytes", str(args.gigabytes),
                        "--make-run", str(run)], check=True)
        count = len(list(run.rglob("*.wav")))
        size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
        print(f"run: {count} WAV samples, {size / 1e6:.0f} MB")
        package = Path(tmp) / "streamed.zip"
        stream_s, stream_mb = measured([sys.executable, "-m", "acr", "export", str(run),
                                        "-o", str(package)])
        verify_s, verify_mb = measured([sys.executable, "-m", "acr", "export", "--verify",
                                        str(package)])
        zipped = package.stat().st_size
        package.unlink()
        memory_s, memory_mb = measured([sys.executable, "-c", IN_MEMORY, str(run),
                                        str(Path(tmp) / "in-memory.zip")])
    print(f"acr export (streamed):       {stream_s:6.1f} s, peak RSS {stream_mb:7.0f} MB "
          f"(package {zipped / 1e6:.0f} MB)")
    print(f"acr export --verify:         {verify_s:6.1f} s, peak RSS {verify_mb:7.0f} MB")
    print(f"in memory (the alternative): {memory_s:6.1f} s, peak RSS {memory_mb:7.0f} MB")
    print(f"ratio: the in-memory export peaks {memory_mb / stream_mb:.1f}x higher; streaming "
          f"takes {stream_s / memory_s:.2f}x its time")
    if max(stream_mb, verify_mb) >= args.limit_mb:
        sys.exit(f"acr export or --verify peaked at {max(stream_mb, verify_mb):.0f} MB, not "
                 f"under {args.limit_mb:.0f} MB")


if __name__ == "__main__":
    main()
