"""Tier B metrics that need model weights on the user's machine: CLAP prompt alignment and FAD
on CLAP audio embeddings. Imported lazily; without the weights they are reported as unavailable
(with the reason and how to get them), never as a failure. The maths (cosine scores, Fréchet
distance) lives in sets.py and is tested offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from acr.commands.analyze import sets

CLAP_RATE = 48000


class Unavailable(Exception):
    """The model-based metrics cannot run here; the message says why and what to do."""


def load_clap(name: str):
    """(model, processor) from the local Hugging Face cache only (no download attempt)."""
    try:
        from transformers import ClapModel, ClapProcessor
    except ImportError as exc:  # pragma: no cover - transformers is pinned
        raise Unavailable(f"transformers has no CLAP support here ({exc})") from exc
    try:
        model = ClapModel.from_pretrained(name, local_files_only=True).eval()
        processor = ClapProcessor.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"CLAP weights {name!r} are not in the local Hugging Face cache; on a "
                          f"connected machine run `hf download {name}` (and copy the cache "
                          "here)") from exc
    return model, processor


def clap_embeddings(paths: list[Path], prompts: list[str | None], name: str
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """CLAP audio embeddings of the clips, and text embeddings of their prompts (if any)."""
    import torch
    import torchaudio.functional as F

    from acr.core.audio import read_clip

    model, processor = load_clap(name)
    audio_embeddings = []
    with torch.inference_mode():
        for path in paths:
            audio, rate = read_clip(path)
            mono = F.resample(torch.from_numpy(audio.mean(axis=0)), rate, CLAP_RATE).numpy()
            inputs = processor(audios=[mono], sampling_rate=CLAP_RATE, return_tensors="pt")
            audio_embeddings.append(model.get_audio_features(**inputs)[0].numpy())
        text = None
        if prompts and all(p is not None for p in prompts):
            inputs = processor(text=list(prompts), return_tensors="pt", padding=True)
            text = model.get_text_features(**inputs).numpy()
    return np.stack(audio_embeddings), text


def model_metrics(clips, reference_clips, settings: list[str], base: str, enabled: bool,
                  name: str) -> tuple[dict, np.ndarray | None]:
    """(summary entry, CLAP scores per clip or None): FAD per setting against the reference (or
    the baseline setting), or why the tier is unavailable or skipped."""
    if not enabled:
        return {"status": "skipped", "reason": "--no-model-metrics"}, None
    try:
        audio, text = clap_embeddings([c.path for c in clips],
                                                  [c.groups.get("prompt") for c in clips], name)
    except Unavailable as exc:
        return {"status": "unavailable", "model": name, "reason": str(exc)}, None
    info: dict = {"status": "ok", "model": name, "fad": {}}
    scores = sets.cosine_scores(audio, text) if text is not None else None
    target = clap_embeddings([c.path for c in reference_clips], [], name)[0] \
        if reference_clips else audio[[i for i, c in enumerate(clips) if c.setting == base]]
    for setting in settings:
        rows = [i for i, c in enumerate(clips) if c.setting == setting]
        info["fad"][setting] = sets.frechet_distance(audio[rows], target)
    return info, scores
