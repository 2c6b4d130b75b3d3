"""Encode every segment once with the compression model; cache the codes on disk.

Cache entries live in $ACR_HOME/cache/codes/<key>.pt, one per audio file, keyed by the file's
content, the compression model's weights, the model's rate and channels and the segment length:
a second run (or a resumed one) reads codes instead of audio.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from acr.core.audio import load_resampled
from acr.commands.finetune.data import AudioFile, Segment, frames, segments_of
from acr.core.errors import UsageError
from acr.core.runs import file_digest
from acr.core.safe_load import load_checkpoint


@dataclass
class Item:
    codes: torch.Tensor  # [K, T] int64, padded to the segment length
    valid: int  # frames that hold audio (the rest is padding, masked in the loss)
    caption: str


def compression_fingerprint(model) -> str:
    """sha256 of the compression model's weights (what the codes depend on)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.compression_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_segments(loaded, file: AudioFile, seconds: float) -> list[torch.Tensor]:
    """Codes [K, T] of each segment of `file` (padded segments are encoded with zeros)."""
    model = loaded.model
    wav = load_resampled(file.path, loaded.sample_rate, loaded.channels)
    length = int(round(seconds * loaded.sample_rate))
    batch = []
    for segment in segments_of(file, seconds):
        start = int(round(segment.start * loaded.sample_rate))
        piece = wav[:, start:start + length]
        batch.append(torch.nn.functional.pad(piece, (0, length - piece.shape[-1])))
    with torch.inference_mode():
        codes, _ = model.compression_model.encode(torch.stack(batch).to(loaded.device))
    return [c.to("cpu", torch.int16) for c in codes]


def cached_codes(loaded, files: list[AudioFile], seconds: float, cache_dir: Path,
                 on_progress=None) -> tuple[dict[str, list[Item]], int]:
    """rel -> the Items of its segments; returns them and how many files were encoded now."""
    from acr.core.atomic import replacing

    fingerprint = compression_fingerprint(loaded.model)
    out, encoded = {}, 0
    for number, file in enumerate(files, 1):
        key = hashlib.sha256(f"{file_digest(file.path)}|{fingerprint}|{loaded.sample_rate}|"
                             f"{loaded.channels}|{seconds:.6f}".encode()).hexdigest()[:32]
        entry = cache_dir / f"{key}.pt"
        if entry.is_file():
            codes = load_checkpoint(entry, hint="; delete it and run again (its codes are "
                                    "encoded anew)")
            if not (isinstance(codes, list) and all(torch.is_tensor(c) for c in codes)):
                raise UsageError(f"{entry} is not an acr code cache entry (a list of code "
                                 "tensors); delete it and run again")
        else:
            codes = encode_segments(loaded, file, seconds)
            with replacing(entry) as tmp:
                torch.save(codes, tmp)
            encoded += 1
        out[file.rel] = [Item(c.long(), min(frames(s.seconds, loaded.frame_rate), c.shape[-1]),
                              file.caption)
                         for c, s in zip(codes, segments_of(file, seconds))]
        if on_progress:
            on_progress(number)
    return out, encoded


def segment_list(files: list[AudioFile], seconds: float) -> list[Segment]:
    return [s for f in files for s in segments_of(f, seconds)]
