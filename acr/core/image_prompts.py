"""Prompts from images: image -> words -> audio. MusicGen and AudioGen have no image
conditioning, so an image is described in words instead: CLIP ranks the phrases of a vocabulary
(slots such as mood, genre, instruments) against the image, and a template turns the best phrase
of each slot into a text prompt. Everything that led to the prompt is recorded.

The vocabulary is a YAML file with a `music` and/or an `sfx` section (MusicGen models use the
first, AudioGen models the second); each section has a caption template ("music that sounds
{phrase}", the text CLIP embeds for each phrase), a prompt template ("{mood} {genre} with
{instruments}") and its slots. The ranking maths (blend, softmax per slot, template) are plain
functions of embeddings, so they are tested on known vectors; loading CLIP lives in
transformers_models.py.
"""
from __future__ import annotations

import hashlib
import string
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from acr.core.config.loader import Item, Loc, Problems, load_config, opt
from acr.core.errors import UsageError

DEFAULT_VOCABULARY = Path(__file__).with_name("vocabulary.yaml")
SECTIONS = {"musicgen": "music", "audiogen": "sfx"}  # model family -> vocabulary section
RECORDED_PHRASES = 5  # phrases per slot kept in the records, best first
IMAGE_HELP = "PNG, JPEG, GIF (first frame), WebP, BMP or TIFF"


# ----------------------------------------------------------------------------------------------
# The vocabulary file


def _nonempty(text: str) -> str | None:
    return None if text.strip() else "must not be empty"


def _caption_problem(text: str) -> str | None:
    return None if "{phrase}" in text else "must contain {phrase} (where each phrase goes)"


@dataclass
class SlotPhrases:
    """A slot with its own caption template."""

    phrases: list[str] = opt(MISSING, "The slot's phrases.", min_items=1,
                             items={"validate": _nonempty})
    caption: Optional[str] = opt(None, "Caption template for this slot's phrases; null = the "
                                 "section's.", validate=_caption_problem)


@dataclass
class VocabularySection:
    """The phrases CLIP ranks for one kind of model, and how they become a prompt."""

    slots: dict[str, Union[list[str], SlotPhrases]] = opt(
        MISSING, "Named slots, each a list of phrases (or {phrases, caption}).", min_items=1,
        pattern=r"[A-Za-z_][A-Za-z0-9_]*", pattern_help="use letters, digits and '_'",
        items={"min_items": 1, "items": {"validate": _nonempty}})
    template: str = opt(MISSING, "The prompt: {slot} is the slot's best phrase, {slot:N} its N "
                        "best joined by 'and', {text} the item's text.")
    caption: str = opt(MISSING, "What CLIP embeds for each phrase, e.g. 'music that sounds "
                       "{phrase}'.", validate=_caption_problem)

    @staticmethod
    def cross_check(item: Item, problems: Problems, path: str) -> None:
        template, slots = item.value.get("template"), item.value.get("slots")
        if template is None or not isinstance(template.value, str) or slots is None or \
                not isinstance(slots.value, dict):
            return
        try:
            fields = template_fields(template.value)
        except ValueError as exc:
            problems.add(template.loc, f"{path}.template", f"{exc}; write {{slot}} or {{slot:N}}")
            return
        for name, _ in fields:
            if name != "text" and name not in slots.value:
                problems.add(template.loc, f"{path}.template", f"{{{name}}} names no slot; use "
                             f"one of: {', '.join(slots.value)} (or text)")


@dataclass
class VocabularyFile:
    """A vocabulary: the music section for MusicGen, the sfx section for AudioGen."""

    music: Optional[VocabularySection] = opt(None, "Phrases for MusicGen models.")
    sfx: Optional[VocabularySection] = opt(None, "Phrases for AudioGen models.")

    @staticmethod
    def cross_check(item: Item, problems: Problems, path: str) -> None:
        if not any(k in item.value and item.value[k].value is not None for k in SECTIONS.values()):
            problems.add(item.loc, "(top level)", "needs a music or an sfx section")


def template_fields(template: str) -> list[tuple[str, int]]:
    """(slot, how many phrases) for each {slot} / {slot:N} of a template; ValueError when one
    is malformed."""
    out = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or conversion or (spec and not spec.isdigit()) or \
                spec == "0" or (spec and name == "text"):
            raise ValueError(f"{{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a slot reference")
        out.append((name, int(spec) if spec else 1))
    return out


@dataclass
class Slot:
    name: str
    caption: str  # the caption template, with {phrase}
    phrases: list[str]

    @property
    def captions(self) -> list[str]:
        return [self.caption.replace("{phrase}", p) for p in self.phrases]


@dataclass
class Vocabulary:
    path: str
    section: str  # music | sfx
    template: str
    slots: list[Slot]


def read_vocabulary(path: str | Path | None, section: str) -> Vocabulary:
    """One section of a vocabulary file (the shipped one when `path` is None); UsageError with
    FILE:LINE:COL for every problem."""
    path = Path(path) if path is not None else DEFAULT_VOCABULARY
    if not path.is_file():
        raise UsageError(f"{path}: vocabulary: no such file; check the path (in a config, "
                         "relative to the config file's folder)")
    data = load_config(VocabularyFile, path)
    chosen = getattr(data, section)
    if chosen is None:
        raise UsageError(f"{path}: has no {section} section, which "
                         f"{'MusicGen' if section == 'music' else 'AudioGen'} models need; add "
                         f"one (see {DEFAULT_VOCABULARY})")
    slots = [Slot(name, phrases.caption or chosen.caption, phrases.phrases)
             if isinstance(phrases, SlotPhrases) else Slot(name, chosen.caption, phrases)
             for name, phrases in chosen.slots.items()]
    return Vocabulary(str(path), section, chosen.template, slots)


def vocabulary_problem(path: str, loc: Loc) -> list[str]:
    """Problems of the vocabulary file a config names (resolved like its other paths)."""
    resolved = config_path(path, loc)
    problems = []
    for section in SECTIONS.values():
        try:
            read_vocabulary(resolved, section)
        except UsageError as exc:
            if "has no" not in exc.lines[0]:
                return [f"{loc}: vocabulary: {exc.lines[0]}", *exc.lines[1:]]
            problems.append(exc.lines[0])
    return [f"{loc}: vocabulary: {problems[0]}"] if len(problems) == 2 else []


# ----------------------------------------------------------------------------------------------
# Images


def config_path(path: str, loc: Loc) -> Path:
    """A path as a config names it: relative to the config file's folder (when `loc` is in a
    file), else to the current folder (a flag)."""
    resolved = Path(path).expanduser()
    source = Path(loc.source)
    if not resolved.is_absolute() and loc.line and source.is_file():
        resolved = source.parent / resolved
    return resolved


def read_image(path: str | Path, key: str = "image") -> Any:
    """An image file as an RGB PIL image: the first frame of an animation, CMYK / palette /
    greyscale converted, transparency composited on white. UsageError naming `key` and the
    file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{key}: {path}: no such file; check the path (in a config, relative "
                         "to the config file's folder)")
    if not path.is_file():
        raise UsageError(f"{key}: {path}: is a folder; give an image file ({IMAGE_HELP})")
    try:
        with Image.open(path) as opened:
            opened.seek(0)  # the first frame of an animated GIF / WebP
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{key}: {path}: cannot read it as an image ({reason}); give an "
                         f"{IMAGE_HELP} file")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and
                                                "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_problems(item: Item, problems: Problems, path: str) -> None:
    """Add a FILE:LINE problem for the image of a prompt item that cannot be read."""
    image = item.value.get("image") if isinstance(item.value, dict) else None
    if image is None or not isinstance(image.value, str) or not image.value.strip():
        return
    try:
        read_image(config_path(image.value, image.loc), "image")
    except UsageError as exc:
        problems.add(image.loc, f"{path}.image", exc.lines[0].removeprefix("image: "))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# The ranking maths (numpy only: tested against values computed by hand)


def unit(vector: Any) -> Any:
    import numpy as np

    vector = np.asarray(vector, dtype=np.float64)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def blend(image: Any, text: Any | None, weight: float) -> Any:
    """The query the phrases are ranked against: the unit image embedding, or with a text,
    weight * image + (1 - weight) * text of the unit embeddings, normalised again."""
    if text is None:
        return unit(image)
    return unit(weight * unit(image) + (1.0 - weight) * unit(text))


def softmax(logits: Any) -> Any:
    import numpy as np

    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits)
    exp = np.exp(shifted)
    return exp / exp.sum()


def slot_probabilities(query: Any, captions: Any, logit_scale: float) -> Any:
    """Softmax over one slot of logit_scale * cosine(query, caption), as CLIP's zero-shot
    classification does (captions: [phrases, dim] unit rows)."""
    import numpy as np

    return softmax(logit_scale * (np.asarray(captions, dtype=np.float64) @ unit(query)))


@dataclass
class Ranked:
    phrase: str
    probability: float


def fill_template(template: str, ranking: dict[str, list[Ranked]], text: str = "") -> str:
    """The prompt: each {slot} replaced by its best phrase, {slot:N} by its N best joined by
    'and', {text} by the item's text; spaces and stray commas of an empty {text} tidied."""
    values: dict[str, str] = {"text": text}
    for name, count in template_fields(template):
        if name != "text":
            best = [r.phrase for r in ranking[name][:count]]
            values[f"{name}:{count}"] = best[0] if len(best) == 1 else \
                ", ".join(best[:-1]) + " and " + best[-1]
    out = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values["text"] if name == "text" else values[f"{name}:{int(spec or 1)}"])
    prompt = " ".join("".join(out).split())
    return prompt.strip(" ,;:-").replace(" ,", ",")


# ----------------------------------------------------------------------------------------------
# From images to prompts


@dataclass(frozen=True)
class ImageRequest:
    image: str  # absolute path
    text: str | None = None
    weight: float = 0.5


@dataclass
class ImageDescription:
    """Everything that led from an image to its prompt (what the sidecars record)."""

    image: str  # the path as given (absolute)
    sha256: str
    clip_model: str
    vocabulary: str
    section: str
    text: str | None
    weight: float | None  # None without a text (the image alone ranks)
    logit_scale: float
    slots: dict[str, list[Ranked]] = field(default_factory=dict)  # best first
    prompt: str = ""

    @property
    def file(self) -> str:
        """Where the run folder keeps a copy: images/<sha256[:12]>-<name>."""
        return f"images/{self.sha256[:12]}-{Path(self.image).name}"

    def record(self) -> dict:
        return {"path": self.image, "file": self.file, "sha256": self.sha256,
                "clip_model": self.clip_model, "vocabulary": self.vocabulary,
                "section": self.section, "text": self.text, "weight": self.weight,
                "logit_scale": round(self.logit_scale, 4),
                "slots": {name: [{"phrase": r.phrase, "probability": round(r.probability, 4)}
                                 for r in ranked[:RECORDED_PHRASES]]
                          for name, ranked in self.slots.items()},
                "prompt": self.prompt}


def section_for(family: str) -> str:
    return SECTIONS.get(family, "music")


def describe_images(requests: list[ImageRequest], clip_model: str, vocabulary: str | None,
                    section: str) -> list[ImageDescription]:
    """Rank the vocabulary's phrases against each image (blended with its text) and build the
    prompts. CLIP loads once; UsageError for an unreadable image, a bad vocabulary or missing
    CLIP weights, before anything is written."""
    import numpy as np

    from acr.core.transformers_models import Unavailable, load_clip

    vocab = read_vocabulary(vocabulary, section)
    images = [read_image(r.image, "image") for r in requests]
    hashes = [file_sha256(r.image) for r in requests]
    try:
        clip = load_clip(clip_model)
    except Unavailable as exc:
        raise UsageError(f"clip_model: {exc}")
    image_vectors = clip.image_embeddings(images)
    texts = [r.text for r in requests if r.text]
    text_vectors = dict(zip(texts, clip.text_embeddings(texts))) if texts else {}
    captions = clip.text_embeddings([c for slot in vocab.slots for c in slot.captions])
    out = []
    for request, vector, sha in zip(requests, image_vectors, hashes):
        query = blend(vector, text_vectors.get(request.text) if request.text else None,
                      request.weight)
        ranking, start = {}, 0
        for slot in vocab.slots:
            rows = captions[start:start + len(slot.phrases)]
            start += len(slot.phrases)
            probabilities = slot_probabilities(query, rows, clip.logit_scale)
            order = np.argsort(-probabilities, kind="stable")
            ranking[slot.name] = [Ranked(slot.phrases[i], float(probabilities[i]))
                                  for i in order]
        out.append(ImageDescription(
            request.image, sha, clip_model, vocab.path, section, request.text,
            request.weight if request.text else None, clip.logit_scale, ranking,
            fill_template(vocab.template, ranking, request.text or "")))
    return out


def copy_images(run_dir: Path, descriptions: list[ImageDescription]) -> None:
    """Keep a copy of every image in the run folder (images/), so the run is self-contained
    and `acr export` packages them."""
    import shutil

    from acr.core.atomic import replacing

    for description in {d.file: d for d in descriptions}.values():
        target = run_dir / description.file
        if not target.exists():
            with replacing(target) as tmp:
                shutil.copyfile(description.image, tmp)


def describe_prompts(items: list, clip_model: str, vocabulary: str | None, family: str
                     ) -> dict[int, ImageDescription]:
    """Index -> description of each image item ({image, text, weight}) of a prompt list, for
    a model of `family`; the same image and text are ranked once."""
    from acr.core import console

    requests = {index: ImageRequest(item.image, item.text, item.weight)
                for index, item in enumerate(items) if hasattr(item, "image")}
    if not requests:
        return {}
    unique = list(dict.fromkeys(requests.values()))
    described = dict(zip(unique, describe_images(unique, clip_model, vocabulary,
                                                 section_for(family))))
    for request, description in described.items():
        console.info(f"{Path(request.image).name} -> {description.prompt!r} (CLIP {clip_model}, "
                     f"{description.section} vocabulary)")
    return {index: described[request] for index, request in requests.items()}
