"""Models from Hugging Face transformers that acr uses beside AudioCraft's own: CLAP (prompt
alignment and FAD in `acr analyze`) and CLIP (prompts from images). Loaded from a model folder or the local Hugging Face cache
only, never downloaded behind the user's back; callers get numpy arrays, not transformers' output
objects (transformers 5 takes `audio=`, not `audios=`, and returns output objects from
`get_*_features`: that knowledge stays here)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 8  # clips (or windows of clips) per CLAP forward pass


class Unavailable(Exception):
    """The model cannot be loaded here; the message says why and what to do."""


@dataclass
class Clap:
    name: str
    model: Any  # transformers.ClapModel, in eval mode
    processor: Any  # transformers.ClapProcessor

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def window(self) -> int:
        """The longest input the model takes, in samples (10 s for the LAION models)."""
        return int(self.processor.feature_extractor.nb_max_samples)

    def audio_embeddings(self, clips: list[np.ndarray]) -> np.ndarray:
        """[clips, dim] unit-norm embeddings of mono float clips at `sample_rate`.

        A clip longer than the model's window is cut into consecutive windows (a last part
        shorter than 1 s is dropped unless it is all there is) whose embeddings are averaged:
        the whole clip counts, and the result does not depend on the feature extractor's random
        crop."""
        if not clips:
            return np.empty((0, self.model.config.projection_dim), dtype=np.float32)
        windows, owners = [], []
        for index, clip in enumerate(clips):
            starts = list(range(0, max(len(clip), 1), self.window))
            parts = [clip[s:s + self.window] for s in starts]
            kept = [p for p in parts if len(p) >= self.sample_rate] or parts[:1]
            windows += kept
            owners += [index] * len(kept)
        embeddings = self._batched(windows, lambda chunk: self.model.get_audio_features(
            **self.processor(audio=chunk, sampling_rate=self.sample_rate, return_tensors="pt")))
        owners_array = np.array(owners)
        means = np.stack([embeddings[owners_array == i].mean(axis=0) for i in range(len(clips))])
        return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """[texts, dim] unit-norm embeddings of the texts."""
        return self._batched(texts, lambda chunk: self.model.get_text_features(
            **self.processor(text=chunk, return_tensors="pt", padding=True)))

    def _batched(self, items: list, forward) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(items), BATCH):
                out.append(forward(items[start:start + BATCH]).pooler_output.float().numpy())
        return np.concatenate(out)


def load_clap(name: str) -> Clap:
    """A CLAP model and its processor from a folder or the local Hugging Face cache;
    Unavailable (with what to do) when they are not there."""
    if not in_local_cache(name):  # said before importing transformers (seconds)
        raise Unavailable(_not_cached(name))
    try:
        from transformers import ClapModel, ClapProcessor
    except ImportError as exc:  # pragma: no cover - transformers is pinned
        raise Unavailable(f"transformers has no CLAP support here ({exc})") from exc
    return Clap(name, *_from_local(ClapModel, ClapProcessor, name, "CLAP", _not_cached(name)))


def _from_local(model_class: Any, processor_class: Any, name: str, kind: str,
                not_cached: str) -> tuple[Any, Any]:
    """(model in eval mode, processor) from a folder or the local Hugging Face cache only,
    without progress bars; Unavailable naming a folder's problem, else `not_cached`."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bars in acr's output
    try:
        return (model_class.from_pretrained(name, local_files_only=True).eval(),
                processor_class.from_pretrained(name, local_files_only=True))
    except (OSError, ValueError) as exc:
        if Path(name).is_dir():
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unavailable(f"{name}: not a {kind} model folder with its processor ({reason})"
                              ) from exc
        raise Unavailable(not_cached) from exc


@dataclass
class Clip:
    name: str
    model: Any  # transformers.CLIPModel, in eval mode
    processor: Any  # transformers.CLIPProcessor

    @property
    def logit_scale(self) -> float:
        """The learned temperature of CLIP's similarities (100 for the released models)."""
        return float(self.model.logit_scale.detach().exp())

    def image_embeddings(self, images: list) -> np.ndarray:
        """[images, dim] unit-norm embeddings of RGB PIL images (resized and cropped by the
        processor)."""
        return _unit(_batched(images, lambda chunk: self.model.get_image_features(
            **self.processor(images=chunk, return_tensors="pt"))))

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """[texts, dim] unit-norm embeddings (texts longer than the model's context are cut)."""
        limit = int(self.model.config.text_config.max_position_embeddings)
        return _unit(_batched(texts, lambda chunk: self.model.get_text_features(
            **self.processor(text=chunk, return_tensors="pt", padding=True, truncation=True,
                             max_length=limit))))


def _batched(items: list, forward) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(items), BATCH):
            result = forward(items[start:start + BATCH])
            out.append(getattr(result, "pooler_output", result).float().numpy())
    return np.concatenate(out)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def load_clip(name: str) -> Clip:
    """A CLIP model and its processor from a folder or the local Hugging Face cache;
    Unavailable (with what to do) when they are not there."""
    try:
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:  # pragma: no cover - transformers is pinned
        raise Unavailable(f"transformers has no CLIP support here ({exc})") from exc
    verbosity = transformers_logging.get_verbosity()
    # (without torchvision, transformers says it falls back to the PIL image processor: the
    # same resize, crop and normalisation, so that note is kept out of acr's output)
    transformers_logging.set_verbosity_error()
    try:
        return Clip(name, *_from_local(
            CLIPModel, CLIPProcessor, name, "CLIP",
            f"CLIP weights {name!r} are not in the local Hugging Face cache; on a connected "
            f"machine run `hf download {name}` (and copy the cache here), or give a local "
            "folder with --clip-model / clip_model:"))
    finally:
        transformers_logging.set_verbosity(verbosity)


def in_local_cache(name: str) -> bool:
    """Whether a model can be loaded without a download: a folder, or a hub id whose config is
    in the local Hugging Face cache (huggingface_hub's own lookup, without transformers)."""
    if Path(name).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub id either
        return False


def _not_cached(name: str) -> str:
    return (f"CLAP weights {name!r} are not in the local Hugging Face cache; on a connected "
            f"machine run `hf download {name}` (and copy the cache here)")
