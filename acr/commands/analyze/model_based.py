"""Tier B metrics that need model weights on the user's machine: CLAP prompt alignment and FAD
on CLAP audio embeddings. The model loads lazily (acr.core.transformers_models); without the
weights the tier is reported as unavailable (with the reason and how to get them), and an
unexpected failure inside it is reported as failed: neither ever loses the rest of the analysis.
The maths (cosine scores, Fréchet distance) lives in sets.py and is tested offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from acr.commands.analyze import sets
from acr.core.audio import finite_audio, read_clip
from acr.core.transformers_models import Clap, Unavailable, load_clap


def clip_embeddings(clap: Clap, paths: list[Path]) -> np.ndarray:
    """CLAP audio embeddings of the files (mono mix at CLAP's rate; NaN / inf read as 0, as
    the per-clip features do)."""
    import torch
    import torchaudio.functional as F

    mono = []
    for path in paths:
        audio, rate = read_clip(path)
        signal = torch.from_numpy(finite_audio(audio)[0].mean(axis=0))
        mono.append(F.resample(signal, rate, clap.sample_rate).numpy() if rate != clap.sample_rate
                    else signal.numpy())
    return clap.audio_embeddings(mono)


def model_metrics(clips, reference_clips, settings: list[str], base: str, enabled: bool,
                  name: str) -> tuple[dict, np.ndarray | None]:
    """(summary entry, CLAP scores per clip or None): CLAP Fréchet distance (FAD) per setting
    against the reference (or the baseline setting), or why the tier is unavailable, skipped or
    failed."""
    if not enabled:
        return {"status": "skipped", "reason": "--no-model-metrics"}, None
    try:
        clap = load_clap(name)
        audio = clip_embeddings(clap, [c.path for c in clips])
        prompts = [c.groups.get("prompt") for c in clips]
        scores = None
        if all(isinstance(p, str) and p for p in prompts):
            scores = sets.cosine_scores(audio, clap.text_embeddings(prompts))
        target = clip_embeddings(clap, [c.path for c in reference_clips]) if reference_clips \
            else audio[[i for i, c in enumerate(clips) if c.setting == base]]
        fad = {setting: sets.frechet_distance(
            audio[[i for i, c in enumerate(clips) if c.setting == setting]], target)
            for setting in settings}
    except Unavailable as exc:
        return {"status": "unavailable", "model": name, "reason": str(exc)}, None
    except Exception as exc:  # noqa: BLE001 - a failure here must not lose the other tiers
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        return {"status": "failed", "model": name, "reason": reason}, None
    return {"status": "ok", "model": name, "fad": fad,
            "fad_to": "reference" if reference_clips else base,
            "clap_scores": scores is not None}, scores
