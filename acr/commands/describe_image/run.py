"""Rank a vocabulary against images with CLIP and show each image's best phrases per slot and
its prompt, as `acr generate --image` would build it (for trying vocabularies and weights)."""
from __future__ import annotations

import json
from pathlib import Path

from acr.core import console
from acr.core.image_prompts import ImageDescription, ImageRequest, describe_images


def describe(images: list[Path], text: str | None, weight: float, section: str,
             vocabulary: str | None, clip_model: str, top: int = 3, as_json: bool = False
             ) -> list[ImageDescription]:
    """Describe every image, then print a table per image (best `top` phrases per slot with
    their probabilities) and its prompt; with `as_json`, the records instead."""
    requests = [ImageRequest(str(Path(image).expanduser().resolve()), text, weight)
                for image in images]
    described = describe_images(requests, clip_model, vocabulary, section)
    if as_json:
        console.result(json.dumps([d.record() for d in described], indent=2))
        return described
    for image, description in zip(images, described):
        rows = [[slot, *(f"{r.phrase} ({r.probability:.2f})" for r in ranked[:top])]
                for slot, ranked in description.slots.items()]
        width = max(len(row) for row in rows)
        console.table(f"{image} (sha256 {description.sha256[:12]}, CLIP "
                      f"{description.clip_model}, {section} vocabulary)",
                      ["slot", *(f"#{n}" for n in range(1, width))],
                      [row + [""] * (width - len(row)) for row in rows])
        console.result(f"{image}: {description.prompt}")
    return described
