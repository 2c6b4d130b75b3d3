"""Helpers shared by the tests (fixtures live in conftest.py): subprocess runners, a check that
plain AudioCraft loads a model folder, GPU markers."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def plain_audiocraft_generates(folder, duration: float = 1.0, cls: str = "MusicGen") -> str:
    """Load `folder` with plain audiocraft `cls.get_pretrained` in a separate Python process (no
    acr import), generate one clip, return "(shape) sample_rate"."""
    proc = run_python("import sys\n"
                      f"from audiocraft.models import {cls}\n"
                      f"m = {cls}.get_pretrained(sys.argv[1], device='cpu')\n"
                      f"m.set_generation_params(duration={duration})\n"
                      "print(tuple(m.generate(['warm piano chords']).shape), m.sample_rate)\n",
                      str(folder))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def run_acr(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acr", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


gpu = pytest.mark.gpu
requires_gpu = pytest.mark.skipif("not __import__('torch').cuda.is_available()",
                                  reason="needs a CUDA GPU")
