"""The plan of an experiment, pure functions of its config: the sample table (model x parameter
set x prompt set x prompt x sample), the batches, and each batch's seed.

A batch is the unit of generation and of reproducibility: its samples share a model, a parameter
set and a kind of conditioning, and it is seeded from (seed, model, parameter set, batch number),
so its audio does not depend on which batches ran before it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acr.core.config.schema import ExperimentConfig
from acr.core.image_prompts import ImageRequest


@dataclass(frozen=True)
class Sample:
    id: str  # <model>/<parameter set>/<prompt set>/<prompt index>-<sample index>
    model: str
    parameter_set: str
    prompt_set: str
    prompt_index: int
    sample_index: int
    prompt: str
    pair: tuple[str, str] | None = None  # (music, sfx) prompts of a hybrid experiment
    melody: str | None = None  # audio whose chroma conditions this sample
    continuation: tuple[str, float] | None = None  # (audio, prompt seconds) it continues
    image: ImageRequest | None = None  # an image item: `prompt` is set once CLIP describes it

    @property
    def conditioning(self) -> str:
        """Samples generated together must be conditioned alike (one generate call)."""
        if self.melody:
            return "melody"
        return f"continuation-{self.continuation[1]:g}s" if self.continuation else ""

    @property
    def path(self) -> str:
        return f"samples/{self.id}.wav"


@dataclass(frozen=True)
class Batch:
    index: int  # position in the whole plan (ranks take index % world_size)
    model: str
    parameter_set: str
    number: int  # position among the batches of the same model and parameter set
    seed: int
    samples: tuple[Sample, ...]


def model_dirnames(models: list[str]) -> dict[str, str]:
    """A folder name per model: the short name, or a folder's / hub id's last part, made unique."""
    out: dict[str, str] = {}
    for name in models:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name.rstrip("/")).name).strip("-.") or "model"
        candidate, n = base, 2
        while candidate in out.values():
            candidate, n = f"{base}-{n}", n + 1
        out[name] = candidate
    return out


def expand(cfg: ExperimentConfig) -> list[Sample]:
    """The sample table: model x parameter set x prompt set x prompt x sample, in that order."""
    dirs = model_dirnames(cfg.model_names)

    def text(prompt) -> tuple:
        if isinstance(prompt, str):
            return prompt, None, None, None, None
        if hasattr(prompt, "music"):
            return f"{prompt.music} + {prompt.sfx}", (prompt.music, prompt.sfx), None, None, None
        if hasattr(prompt, "image"):
            return "", None, None, None, ImageRequest(prompt.image, prompt.text, prompt.weight)
        continuation = (prompt.continuation.audio, prompt.continuation.prompt_seconds) \
            if prompt.continuation else None
        return prompt.text, None, prompt.melody, continuation, None

    return [Sample(f"{dirs[model]}/{pset}/{pname}/{pi}-{si}", model, pset, pname, pi, si,
                   *text(prompt))
            for model in cfg.model_names
            for pset in cfg.parameter_sets
            for pname, prompts in cfg.prompt_sets.items()
            for pi, prompt in enumerate(prompts)
            for si in range(cfg.samples_per_prompt)]


def batch_seed(seed: int, *identity: Any) -> int:
    """A 63-bit seed from the base seed and a batch's identity (stable across runs and machines)."""
    text = "/".join(str(part) for part in (seed, *identity))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def plan_batches(samples: list[Sample], batch_size: int | dict[str, int], seed: int
                 ) -> list[Batch]:
    """Consecutive chunks of `batch_size` samples (one size, or a size per model) that share
    model, parameter set and kind of conditioning (plain grids: model and parameter set)."""
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.model, sample.parameter_set, sample.conditioning),
                          []).append(sample)
    batches = []
    for (model, pset, conditioning), members in groups.items():
        identity = (model, pset, conditioning) if conditioning else (model, pset)
        size = batch_size[model] if isinstance(batch_size, dict) else batch_size
        for number, start in enumerate(range(0, len(members), size)):
            batches.append(Batch(len(batches), model, pset, number,
                                 batch_seed(seed, *identity, number),
                                 tuple(members[start:start + size])))
    return batches


def is_done(run_dir: Path, sample: Sample) -> bool:
    wav = run_dir / sample.path
    return wav.is_file() and wav.with_suffix(".json").is_file()
