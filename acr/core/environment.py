"""Facts about the environment a run or a report records: package versions, the git commit."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from acr import __version__

RUN_PACKAGES = ("audiocraft", "torch", "torchaudio")  # what every run's meta.json records


def versions(packages: tuple[str, ...] = RUN_PACKAGES) -> dict:
    """acr's and Python's versions and each installed package's (None when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"acr": __version__, "python": platform.python_version()}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the git repository the command runs in (with '-dirty' for local changes)."""
    try:
        def run(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None
