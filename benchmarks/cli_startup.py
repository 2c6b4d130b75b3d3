"""`acr --help` must stay fast: compare it with `python -c "import audiocraft.models"`.

Runs each command several times in fresh processes and prints the median wall time of both and
their ratio. acr's CLI imports no torch or audiocraft, so it should be many times faster.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int = 5) -> None:
    acr_help = median_seconds([sys.executable, "-m", "acr", "--help"], repeats)
    audiocraft = median_seconds([sys.executable, "-c", "import audiocraft.models"], repeats)
    print(f"acr --help:               {acr_help * 1000:8.0f} ms (median of {repeats})")
    print(f"import audiocraft.models: {audiocraft * 1000:8.0f} ms (median of {repeats})")
    print(f"ratio: acr --help is {audiocraft / acr_help:.1f}x faster than importing audiocraft")
    if acr_help >= 1.0:
        sys.exit("acr --help took a second or more")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
