"""Config schemas (dataclasses) and a YAML loader that reports every problem at once.

Each problem is one line, `FILE:LINE:COL: dotted.key: problem`. The YAML is composed into nodes
(never constructed into Python objects, so no tag can run code) and checked against a dataclass
schema whose fields carry their help text and limits in `metadata`. Overrides (`--set key=value`
and command-line flags) are applied to the node tree before checking, so they are checked the same
way and their problems name the flag instead of a file line.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from acr.errors import UsageError

# ----------------------------------------------------------------------------------------------
# Schema helpers


def opt(default: Any = MISSING, help: str = "", **checks: Any) -> Any:
    """A documented schema field. checks: gt, ge, lt, le, choices, pattern, min_items."""
    meta = {"help": help, **checks}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return field(default_factory=lambda: _copy(value), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return type(value)(value)


def nonempty(text: str) -> str | None:
    return None if text.strip() else "must not be empty"


def model_problem(name: str) -> str | None:
    """Why `name` is not a model acr can resolve (checked without importing torch), or None."""
    from acr.models import resolve_model

    try:
        resolve_model(name)
    except UsageError as exc:
        return exc.lines[0]
    return None


def _may_have_melody(name: str) -> bool:
    """False for names known to lack chroma conditioning (folders and hub ids: checked on load)."""
    from acr.models import SHORT_NAMES, TINY

    if name in TINY or name in SHORT_NAMES:
        return name in MELODY_MODELS
    return not name.startswith(("facebook/musicgen-", "facebook/audiogen", "facebook/magnet")) \
        or "melody" in name


DEVICE_PATTERN = r"auto|cpu|cuda|cuda:\d+|mps"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_HELP = "use letters, digits, '.', '_' and '-' (starting with a letter or digit)"


@dataclass
class GenerationParams:
    """AudioCraft generation parameters; the defaults are AudioCraft's own."""

    duration: float = opt(10.0, "Seconds of audio per sample. Longer than the model's window "
                          "(30 s MusicGen, 10 s AudioGen) is generated with a sliding window.",
                          gt=0, le=3600)
    use_sampling: bool = opt(True, "Sample tokens (true) or always take the most likely (false).")
    top_k: int = opt(250, "Sample among the k most likely tokens; 0 disables top-k.", ge=0)
    top_p: float = opt(0.0, "Nucleus sampling: smallest token set with this total probability; "
                       "0 disables it (then top_k applies).", ge=0, le=1)
    temperature: float = opt(1.0, "Softmax temperature; higher is more varied, 0 is greedy.", ge=0)
    cfg_coef: float = opt(3.0, "Classifier-free guidance strength; higher follows the text more.",
                          ge=0)
    two_step_cfg: bool = opt(False, "Run the conditional and unconditional passes separately "
                             "(AudioCraft then ignores cfg_coef and uses 3.0).")
    extend_stride: Optional[float] = opt(None, "Seconds the window advances when extending beyond "
                                         "the model's window; null = the model's default (18 s "
                                         "MusicGen, 2 s AudioGen). Must be below the window.", gt=0)


SampleFormat = Literal["pcm16", "float32"]


def model_field(default: Any = "musicgen-small") -> Any:
    return opt(default, "Model: a short name (see `acr models`), a Hugging Face id, a local folder "
               "in AudioCraft's release layout, or tiny-musicgen / tiny-audiogen.",
               validate=model_problem)


def device_field() -> Any:
    return opt("auto", "auto | cpu | cuda | cuda:N | mps.", pattern=DEVICE_PATTERN,
               pattern_help="use auto, cpu, cuda, cuda:N or mps")


def loudness_field() -> Any:
    return opt(None, "Normalise each clip to this integrated loudness (LUFS, e.g. -14); null "
               "keeps the model's output untouched. The gain is recorded in the sidecar.",
               ge=-70, le=0)


def sample_format_field() -> Any:
    return opt("pcm16", "WAV sample format: pcm16 (clips at full scale; clipped samples are "
               "counted in the sidecar) or float32 (lossless).")


@dataclass
class HybridPart:
    """One stem of a hybrid mix: a model and its prompt."""

    prompt: str = opt(MISSING, "What this stem should sound like.", validate=nonempty)
    model: Optional[str] = opt(None, "Model for this stem; null = musicgen-small for music, "
                               "audiogen-medium for sfx.", validate=model_problem)
    duration: Optional[float] = opt(None, "Seconds to generate; null = params.duration.",
                                    gt=0, le=3600)


@dataclass
class MixSettings:
    """How two stems become one mix (hybrid generate and hybrid experiments)."""

    blend: float = opt(0.5, "Music's share once both stems are at the same loudness: the "
                       "stems end up 20 log10(blend / (1 - blend)) dB apart (0.5 = equal).",
                       gt=0, lt=1)
    length: Literal["trim", "pad", "loop"] = opt(
        "loop", "When the stems' lengths differ: trim both to the shorter, pad the shorter with "
        "silence, or loop the shorter to the longer.")
    stem_lufs: float = opt(-20.0, "Integrated loudness both stems are matched to before "
                           "blending.", ge=-70, le=0)
    ceiling_db: float = opt(-1.0, "Limiter ceiling: no sample of the mix exceeds this (dBFS).",
                            ge=-30, le=0)
    sample_rate: Optional[int] = opt(None, "Rate of the mix; null = the higher of the two "
                                     "models' rates.", ge=8000, le=192000)


@dataclass(kw_only=True)
class Hybrid(MixSettings):
    """Music and sound effects, generated by two models and mixed properly."""

    music: HybridPart = opt(MISSING, "The music stem (a MusicGen model).")
    sfx: HybridPart = opt(MISSING, "The effects stem (an AudioGen model).")


@dataclass(kw_only=True)
class HybridExperiment(MixSettings):
    """A hybrid experiment: prompt-set items are {music, sfx} pairs; parameter sets may set
    `blend`."""

    music_model: str = opt("musicgen-small", "Model of the music stems (MusicGen).",
                           validate=model_problem)
    sfx_model: str = opt("audiogen-medium", "Model of the effects stems (AudioGen).",
                         validate=model_problem)
    sfx_duration: Optional[float] = opt(None, "Seconds of effects to generate; null = the "
                                        "parameter set's duration.", gt=0, le=3600)


@dataclass
class HybridPrompt:
    """A prompt-set item of a hybrid experiment."""

    music: str = opt(MISSING, "The music prompt.", validate=nonempty)
    sfx: str = opt(MISSING, "The effects prompt.", validate=nonempty)


@dataclass
class ConditionedPrompt:
    """A prompt-set item with melody or continuation conditioning."""

    text: str = opt(MISSING, "The text prompt.", validate=nonempty)
    melody: Optional[str] = opt(None, "Audio whose melody conditions this prompt (melody "
                                "models only); relative to the config file's folder.",
                                validate=nonempty)
    continuation: Optional[Continuation] = opt(None, "Audio this prompt continues.")


@dataclass
class ExperimentParams(GenerationParams):
    """Generation parameters, plus the blend of hybrid experiments."""

    blend: Optional[float] = opt(None, "Hybrid experiments only: music's share (see "
                                 "hybrid.blend); null = hybrid.blend.", gt=0, lt=1)


@dataclass
class Continuation:
    """Continue an existing recording (AudioCraft's generate_continuation)."""

    audio: str = opt(MISSING, "Audio file to continue; relative paths resolve against the "
                     "config file's folder.", validate=nonempty)
    prompt_seconds: float = opt(5.0, "Seconds from the start of the file used as the prompt "
                                "(the output includes them).", gt=0, le=600)


MELODY_MODELS = [n for n in ("musicgen-melody", "musicgen-melody-large", "musicgen-stereo-melody",
                             "musicgen-stereo-melody-large")]


@dataclass
class GenerateConfig:
    """`acr generate`: prompts to one model, one batch, one parameter set."""

    prompts: list[str] = opt([], "Text prompts; generated together as one batch (required "
                             "unless `hybrid` is given).", items={"validate": nonempty})
    model: str = model_field()
    name: str = opt("generate", "Run name: runs go to experiments/<name>/<timestamp>-<id>/.",
                    pattern=NAME_PATTERN, pattern_help=NAME_HELP)
    seed: Optional[int] = opt(None, "Random seed; null picks one and records it in config.yaml.",
                              ge=0, lt=2**63)
    device: str = device_field()
    params: GenerationParams = opt(GenerationParams(), "Generation parameters.")
    loudness_lufs: Optional[float] = loudness_field()
    sample_format: SampleFormat = sample_format_field()
    hybrid: Optional[Hybrid] = opt(None, "Mix a music stem and an effects stem (instead of "
                                   "`prompts`): see the README's hybrid section.")
    melody: Optional[str] = opt(None, "Audio file whose melody (chroma) conditions every prompt; "
                                "needs a melody model (musicgen-melody, musicgen-melody-large, "
                                "musicgen-stereo-melody[-large]).", validate=nonempty)
    continuation: Optional[Continuation] = opt(None, "Continue a recording instead of starting "
                                               "from silence.")

    @staticmethod
    def cross_check(item: "Item", problems: "_Problems", path: str) -> None:
        prompts = item.value.get("prompts")
        has_prompts = prompts is not None and bool(prompts.value)
        has_hybrid = "hybrid" in item.value and item.value["hybrid"].value is not None
        if has_prompts and has_hybrid:
            problems.add(item.key_locs["hybrid"], "hybrid", "give either prompts or hybrid, "
                         "not both")
        elif not has_prompts and not has_hybrid:
            problems.add(prompts.loc if prompts is not None else item.loc, "prompts",
                         "missing required key: at least one prompt (or a `hybrid` section)")
        given = {k for k in ("melody", "continuation", "hybrid")
                 if k in item.value and item.value[k].value is not None}
        if len(given) > 1:
            second = sorted(given, key=lambda k: item.key_locs[k].line)[1]
            problems.add(item.key_locs[second], second, f"{' and '.join(sorted(given))} do not "
                         "go together; use one per run")
        model = item.value.get("model")
        name = model.value if model is not None and isinstance(model.value, str) else \
            "musicgen-small"
        if "melody" in given and not _may_have_melody(name):
            problems.add(item.key_locs["melody"], "melody", f"model {name!r} has no melody "
                         f"(chroma) conditioning; use one of: {', '.join(MELODY_MODELS)}")


@dataclass
class Finding:
    """A finding recorded with a run (also added later by `acr experiment note`)."""

    title: str = opt(MISSING, "Short title.", validate=nonempty)
    description: str = opt("", "What was observed, and how.")


@dataclass
class ExperimentConfig:
    """`acr experiment`: prompt sets x parameter sets (x models) x samples."""

    KIND_MARKER: ClassVar[str] = "prompt_sets"

    name: str = opt(MISSING, "Experiment name: runs go to experiments/<name>/<timestamp>-<id>/.",
                    pattern=NAME_PATTERN, pattern_help=NAME_HELP)
    prompt_sets: dict[str, list[Union[str, ConditionedPrompt, HybridPrompt]]] = opt(
        MISSING, "Named lists of prompts, e.g. joy: [...], sadness: [...]; an item may be "
        "{text, melody} or {text, continuation: {audio, prompt_seconds}}, and in a hybrid "
        "experiment it is a {music, sfx} pair.", min_items=1, pattern=NAME_PATTERN,
        pattern_help=NAME_HELP, items={"min_items": 1, "items": {"validate": nonempty}})
    parameter_sets: dict[str, ExperimentParams] = opt(
        MISSING, "Named generation parameter sets (the keys of `params` of acr generate), each "
        "merged over `defaults`.", min_items=1, pattern=NAME_PATTERN, pattern_help=NAME_HELP)
    description: str = opt("", "What the experiment asks; recorded with the run.")
    model: Optional[str] = model_field(None)
    models: Optional[list[str]] = opt(None, "Several models: a model axis (instead of `model`).",
                                      min_items=1, items={"validate": model_problem})
    seed: int = opt(0, "Base seed; every batch is seeded from (seed, model, parameter set, "
                    "batch number).", ge=0, lt=2**63)
    samples_per_prompt: int = opt(1, "Samples generated for every prompt and setting.",
                                  ge=1, le=100000)
    batch_size: Union[int, Literal["auto"]] = opt(
        "auto", "Samples per generate call; auto picks from free GPU memory (8 on the CPU). The "
        "number used is recorded in meta.json and kept on --resume.", ge=1, le=4096)
    defaults: ExperimentParams = opt(ExperimentParams(), "Parameters merged under every "
                                     "parameter set.")
    device: str = device_field()
    loudness_lufs: Optional[float] = loudness_field()
    sample_format: SampleFormat = sample_format_field()
    analyze: bool = opt(True, "Run `acr analyze` on the run at the end (metrics, statistics, "
                        "plots and report in RUN/analysis/).")
    findings: list[Finding] = opt([], "Findings recorded with the run: [{title, description}].")
    hybrid: Optional[HybridExperiment] = opt(None, "Mix music and effects stems (instead of "
                                             "`model`): prompt-set items become {music, sfx} "
                                             "pairs, parameter sets may set `blend`.")

    @staticmethod
    def prepare(item: "Item") -> None:
        """Merge `defaults` under every parameter set, keeping each key's own location."""
        defaults = item.value.get("defaults")
        sets = item.value.get("parameter_sets")
        if sets is None or not isinstance(sets.value, dict):
            return
        base = defaults if defaults is not None and isinstance(defaults.value, dict) else None
        for name, pset in sets.value.items():
            if pset.value is None:
                pset = Item({}, pset.loc)
            if base is not None and isinstance(pset.value, dict):
                pset = Item({**base.value, **pset.value}, pset.loc,
                            key_locs={**base.key_locs, **pset.key_locs})
            sets.value[name] = pset

    @staticmethod
    def cross_check(item: "Item", problems: "_Problems", path: str) -> None:
        def given(key: str) -> bool:
            return key in item.value and item.value[key].value is not None

        has_model, has_models, hybrid = given("model"), given("models"), given("hybrid")
        if has_model and has_models:
            problems.add(item.key_locs["models"], "models",
                         "give either model or models, not both")
        elif hybrid and (has_model or has_models):
            problems.add(item.key_locs["hybrid"], "hybrid", "a hybrid experiment names its models "
                         "in hybrid.music_model / hybrid.sfx_model; drop model / models")
        elif not has_model and not has_models and not hybrid:
            problems.add(item.loc, "model", "missing required key: the model to use (or `models: "
                                            "[...]` for a model axis)")
        sets = item.value.get("prompt_sets")
        for name, prompts in (sets.value.items() if sets is not None and
                              isinstance(sets.value, dict) else []):
            for index, prompt in enumerate(prompts.value if isinstance(prompts.value, list)
                                           else []):
                pair = isinstance(prompt.value, dict) and "music" in prompt.value
                where = f"prompt_sets.{name}[{index}]"
                if hybrid and not pair:
                    problems.add(prompt.loc, where, "a hybrid experiment needs {music: ..., "
                                 "sfx: ...} pairs")
                elif not hybrid and pair:
                    problems.add(prompt.loc, where, "music/effects pairs need a `hybrid:` "
                                 "section")
                elif isinstance(prompt.value, dict) and all(
                        k in prompt.value and prompt.value[k].value is not None
                        for k in ("melody", "continuation")):
                    problems.add(prompt.loc, where, "melody and continuation do not go "
                                 "together; use one per prompt")
                elif isinstance(prompt.value, dict) and "melody" in prompt.value and \
                        given("model") and isinstance(item.value["model"].value, str) and \
                        not _may_have_melody(item.value["model"].value):
                    problems.add(prompt.value["melody"].loc, f"{where}.melody", f"model "
                                 f"{item.value['model'].value!r} has no melody (chroma) "
                                 f"conditioning; use one of: {', '.join(MELODY_MODELS)}")
        psets = item.value.get("parameter_sets")
        for name, pset in (psets.value.items() if psets is not None and
                           isinstance(psets.value, dict) else []):
            if not hybrid and isinstance(pset.value, dict) and "blend" in pset.value and \
                    pset.value["blend"].value is not None:
                problems.add(pset.key_locs["blend"], f"parameter_sets.{name}.blend",
                             "blend needs a `hybrid:` section")

    @property
    def model_names(self) -> list[str]:
        if self.hybrid is not None:
            return ["hybrid"]
        return list(self.models) if self.models else [self.model]


LORA_TARGETS = ["in_proj", "out_proj", "linear1", "linear2", "heads"]


@dataclass
class LoraOptions:
    """Low-rank adapters (strategy: lora), merged into the weights when the model is written."""

    rank: int = opt(8, "Rank of every adapter.", ge=1, le=4096)
    alpha: float = opt(16.0, "Scale: the update is (alpha / rank) B A.", gt=0)
    dropout: float = opt(0.0, "Dropout on the entries of the adapter's A matrix during "
                         "training (drop-connect on the low-rank update).", ge=0, lt=1)
    targets: list[str] = opt(["in_proj", "out_proj", "linear1", "linear2"],
                             "Weights that get adapters: in_proj (the fused q/k/v projection), "
                             "out_proj, linear1 / linear2 (feed-forward), heads (output layers).",
                             min_items=1, items={"choices": LORA_TARGETS})


@dataclass
class ProgressiveOptions:
    """Progressive unfreezing (strategy: progressive)."""

    stages: int = opt(3, "Stages, spread evenly over the epochs: the first trains the output "
                      "heads and the top layers, each next one unfreezes the layers below.",
                      ge=1, le=1000)
    lr_decay: float = opt(0.5, "Learning-rate factor for the layers each later stage unfreezes.",
                          gt=0, le=1)


@dataclass
class FinetuneConfig:
    """`acr finetune`: adapt a model to a folder of captioned audio."""

    KIND_MARKER: ClassVar[str] = "data"

    name: str = opt(MISSING, "Run name: runs go to experiments/<name>/<timestamp>-<id>/.",
                    pattern=NAME_PATTERN, pattern_help=NAME_HELP)
    data: str = opt(MISSING, "Folder of captioned audio; relative paths resolve against the "
                    "config file's folder.", validate=nonempty)
    model: str = model_field()
    strategy: Literal["full", "last_layers", "lora", "progressive"] = opt(
        "lora", "What trains: full (every LM weight), last_layers (the top n_layers and the "
        "heads), lora (low-rank adapters), progressive (unfreezing from the top, stage by "
        "stage). The text encoder stays frozen.")
    epochs: int = opt(10, "Passes over the training segments.", ge=1, le=100000)
    batch_size: Union[int, Literal["auto"]] = opt(
        "auto", "Segments per optimizer micro-step; auto picks from device memory and model "
        "size (4 on the CPU) and records the choice.", ge=1, le=4096)
    lr: float = opt(1.0e-4, "Peak learning rate (AdamW).", gt=0, le=1)
    weight_decay: float = opt(0.01, "AdamW weight decay.", ge=0, le=1)
    warmup_ratio: float = opt(0.05, "Share of the optimizer steps spent warming up linearly, "
                              "then cosine decay to zero.", ge=0, lt=1)
    grad_clip: float = opt(1.0, "Clip the gradient norm to this; 0 disables clipping.", ge=0)
    grad_accum: int = opt(1, "Micro-batches accumulated per optimizer step.", ge=1, le=4096)
    segment_duration: Optional[float] = opt(None, "Seconds per training segment; null = the "
                                            "model's window. Longer files are cut, shorter ones "
                                            "padded and masked.", gt=0, le=600)
    valid_split: float = opt(0.1, "Share of files held out for validation (at least one when "
                             "there are two or more files).", ge=0, lt=1)
    seed: int = opt(1, "Seed of the split, the data order, dropout and sampling.", ge=0,
                    lt=2**63)
    patience: int = opt(3, "Stop after this many epochs without a better validation loss; "
                        "0 never stops early.", ge=0)
    n_layers: int = opt(2, "Layers trained by strategy last_layers (from the top).", ge=1)
    lora: LoraOptions = opt(LoraOptions(), "LoRA settings (strategy: lora).")
    progressive: ProgressiveOptions = opt(ProgressiveOptions(), "Progressive unfreezing "
                                          "settings (strategy: progressive).")
    sample_every: int = opt(5, "Generate the sample prompts every N epochs into "
                            "samples/epoch-NNN/; 0 = never.", ge=0)
    sample_prompts: list[str] = opt([], "Prompts for those samples; empty = the first three "
                                    "distinct captions (validation files first).",
                                    items={"validate": nonempty})
    sample_duration: float = opt(5.0, "Seconds per sample.", gt=0, le=600)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto", "Autocast on CUDA: auto = bf16 where supported, else fp16 (with a gradient "
        "scaler); the CPU always trains in fp32.")
    activation_checkpointing: bool = opt(False, "Recompute transformer activations in the "
                                         "backward pass: less memory, more time.")
    device: str = device_field()


# The config kinds `acr validate` knows, and the key that tells each apart when not named.
KINDS: dict[str, type] = {"generate": GenerateConfig, "experiment": ExperimentConfig,
                          "finetune": FinetuneConfig}


# ----------------------------------------------------------------------------------------------
# Located values: a YAML node tree reduced to plain values that remember where they came from


@dataclass
class Loc:
    source: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.col}" if self.line else self.source


@dataclass
class Item:
    value: Any  # dict[str, Item] | list[Item] | scalar
    loc: Loc
    plain: bool = False  # an unquoted scalar (so "3e-4" may be read as a float)
    bad: bool = False  # already reported while parsing (a forbidden tag): not checked again
    key_locs: dict[str, Loc] = field(default_factory=dict)


class _Problems(list):
    def add(self, loc: Loc, path: str, message: str) -> None:
        """One line per problem; a spot already reported with the same message (a `defaults`
        key seen again through every parameter set it is merged into) is not repeated."""
        seen = getattr(self, "_seen", set())
        if (str(loc), message) in seen and loc.line:
            return
        seen.add((str(loc), message))
        self._seen = seen
        self.append(f"{loc}: {path or '(top level)'}: {message}")


_SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in
              ("str", "int", "float", "bool", "null", "seq", "map")}
_constructor = yaml.constructor.SafeConstructor()


def _to_item(node: yaml.Node, source: str, path: str, problems: _Problems) -> Item:
    loc = Loc(source, node.start_mark.line + 1, node.start_mark.column + 1)
    if node.tag not in _SAFE_TAGS:
        what = "python objects cannot be loaded; acr reads YAML safely" \
            if node.tag.startswith("tag:yaml.org,2002:python/") else "only plain YAML is allowed"
        problems.add(loc, path, f"tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not "
                                f"allowed ({what}); remove it")
        return Item(None, loc, bad=True)
    if isinstance(node, yaml.MappingNode):
        out = Item({}, loc)
        for key_node, value_node in node.value:
            key_loc = Loc(source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                problems.add(key_loc, path, "keys must be plain strings")
                continue
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key in out.value:
                first = out.key_locs[key]
                problems.add(key_loc, sub, f"duplicate key (first set at line {first.line}); "
                                           "keep one")
                continue
            out.key_locs[key] = key_loc
            out.value[key] = _to_item(value_node, source, sub, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return Item([_to_item(n, source, f"{path}[{i}]", problems)
                     for i, n in enumerate(node.value)], loc)
    value = _constructor.construct_object(node, deep=True)
    return Item(value, loc, plain=node.style is None)


def parse_yaml(text: str, source: str, problems: _Problems | None = None) -> Item:
    """Compose YAML text into an Item tree.

    Problems found while composing (duplicate keys, forbidden tags) are added to `problems` so
    that schema problems can be reported with them; without `problems` they raise UsageError.
    A syntax error always raises at once (nothing after it can be located).
    """
    own = problems is None
    problems = _Problems() if own else problems
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        loc = Loc(source, mark.line + 1, mark.column + 1) if mark else Loc(source)
        reason = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{loc}: YAML syntax error: {reason}; fix the YAML at that position")
    if node is None:
        return Item({}, Loc(source, 1, 1))
    item = _to_item(node, source, "", problems)
    if own and problems:
        raise UsageError(*problems)
    return item


# ----------------------------------------------------------------------------------------------
# Overrides


def apply_override(root: Item, dotted: str, value: Item) -> None:
    """Set `dotted` (like params.top_k) in the tree to `value`, creating mappings as needed."""
    node = root
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.value.get(part) if isinstance(node.value, dict) else None
        if child is None or not isinstance(child.value, dict):
            child = Item({}, value.loc)
            node.value[part] = child
            node.key_locs[part] = value.loc
        node = child
    node.value[parts[-1]] = value
    node.key_locs[parts[-1]] = value.loc


def parse_set(arg: str) -> tuple[str, Item]:
    """`key.sub=value` -> (dotted key, Item); the value is read as YAML (`[a, b]`, `1e-4`, ...)."""
    source = f"--set {arg}"
    key, sep, text = arg.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key.strip()):
        raise UsageError(f"{source}: expected --set dotted.key=value, like "
                         "--set params.temperature=1.2")
    if text.strip() == "":
        raise UsageError(f"{source}: {key}: empty value; write --set {key}=null to reset it")
    item = parse_yaml(text, source)
    _relocate(item, Loc(source))
    return key.strip(), item


def _relocate(item: Item, loc: Loc) -> None:
    item.loc = loc
    if isinstance(item.value, dict):
        item.key_locs = {k: loc for k in item.value}
        for sub in item.value.values():
            _relocate(sub, loc)
    elif isinstance(item.value, list):
        for sub in item.value:
            _relocate(sub, loc)


def flag_item(value: Any, flag: str) -> Item:
    """A command-line flag's value (already typed by the CLI) as an override Item."""
    if isinstance(value, (list, tuple)):
        return Item([Item(v, Loc(flag)) for v in value], Loc(flag))
    return Item(value, Loc(flag))


# ----------------------------------------------------------------------------------------------
# Checking an Item tree against a schema

_FLOAT_RE = re.compile(r"[-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else yaml.safe_dump(value).strip().removesuffix(
        "\n...").strip()


def _check_value(tp: Any, item: Item, path: str, problems: _Problems, meta: dict) -> Any:
    if item.bad:
        return MISSING
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if item.value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _check_value(inner[0], item, path, problems, meta)
        attempts = {}
        for alternative in inner:  # the first alternative that fits without problems
            attempts[alternative] = _Problems()
            value = _check_value(alternative, item, path, attempts[alternative], meta)
            if not attempts[alternative]:
                return value
        number = next((a for a in inner if a in (int, float)), None)
        mappings = [a for a in inner if dataclasses.is_dataclass(a)]
        if number is not None and isinstance(item.value, (int, float)) and \
                not isinstance(item.value, bool):
            problems.extend(attempts[number])  # a number, but not a valid one (out of range)
        elif mappings and isinstance(item.value, dict):  # the mapping it was closest to
            problems.extend(min((attempts[a] for a in mappings), key=len))
        else:
            names = " or ".join(_type_name(a) for a in inner)
            problems.add(item.loc, path, f"expected {names}, got {_show(item.value)}")
        return MISSING
    if item.value is None:
        problems.add(item.loc, path, f"expected {_type_name(tp)}, got null")
        return MISSING
    if origin is Literal:
        if item.value not in args:
            choices = ", ".join(str(a) for a in args)
            problems.add(item.loc, path, f"{_show(item.value)} is not one of: {choices}")
            return MISSING
        return item.value
    if dataclasses.is_dataclass(tp):
        return check(tp, item, problems, path)
    if origin is list:
        if not _container_ok(item, list, path, problems, meta):
            return MISSING
        out = [_check_value(args[0], sub, f"{path}[{i}]", problems, meta.get("items", {}))
               for i, sub in enumerate(item.value)]
        return MISSING if MISSING in out else out
    if origin is dict:
        if not _container_ok(item, dict, path, problems, meta):
            return MISSING
        out = {}
        for key, sub in item.value.items():
            sub_path = f"{path}.{key}"
            if "pattern" in meta and not re.fullmatch(meta["pattern"], str(key)):
                rule = meta.get("pattern_help", f"must match {meta['pattern']}")
                problems.add(item.key_locs.get(key, item.loc), sub_path,
                             f"name {key!r} is not valid: {rule}")
            out[str(key)] = _check_value(args[1], sub, sub_path, problems, meta.get("items", {}))
        return MISSING if MISSING in out.values() else out
    value = _scalar(tp, item, path, problems)
    if value is MISSING:
        return MISSING
    return _check_limits(value, item, path, problems, meta)


def _container_ok(item: Item, kind: type, path: str, problems: _Problems, meta: dict) -> bool:
    """Is `item` a list / mapping (`kind`) with at least meta['min_items'] entries?"""
    if not isinstance(item.value, kind):
        problems.add(item.loc, path, f"expected {_type_name(kind[Any])}, got {_show(item.value)}")
        return False
    if len(item.value) < meta.get("min_items", 0):
        problems.add(item.loc, path, f"needs at least {meta['min_items']} item(s)")
        return False
    return True


def _scalar(tp: type, item: Item, path: str, problems: _Problems) -> Any:
    value = item.value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and item.plain and _FLOAT_RE.fullmatch(value) and \
                any(c.isdigit() for c in value):
            return float(value.replace("_", ""))  # YAML 1.1 reads 3e-4 as a string
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            problems.add(item.loc, path, f"expected a string, got the number {_show(value)}; "
                                         "quote it")
            return MISSING
    problems.add(item.loc, path, f"expected {_type_name(tp)}, got {_show(value)}")
    return MISSING


def _check_limits(value: Any, item: Item, path: str, problems: _Problems, meta: dict) -> Any:
    tests = [("gt", lambda v, b: v > b, "greater than"), ("ge", lambda v, b: v >= b, "at least"),
             ("lt", lambda v, b: v < b, "less than"), ("le", lambda v, b: v <= b, "at most")]
    for key, ok, words in tests:
        if key in meta and not ok(value, meta[key]):
            problems.add(item.loc, path, f"{_show(item.value)} is out of range: must be {words} "
                                         f"{meta[key]}")
            return MISSING
    if isinstance(value, float) and value != value:
        problems.add(item.loc, path, "NaN is not allowed")
        return MISSING
    if "choices" in meta and value not in meta["choices"]:
        problems.add(item.loc, path, f"{_show(value)} is not one of: "
                                     f"{', '.join(map(str, meta['choices']))}")
        return MISSING
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        problems.add(item.loc, path, f"{_show(value)} is not valid: "
                                     f"{meta.get('pattern_help', 'must match ' + meta['pattern'])}")
        return MISSING
    if "validate" in meta and (message := meta["validate"](value)):
        problems.add(item.loc, path, message)
        return MISSING
    return value


def check(schema: type, item: Item, problems: _Problems, path: str = "") -> Any:
    """Build a `schema` instance from `item`, adding every problem found to `problems`."""
    if not isinstance(item.value, dict):
        problems.add(item.loc, path, f"expected a mapping, got {_show(item.value)}")
        return MISSING
    if hasattr(schema, "prepare"):
        schema.prepare(item)
    hints = typing.get_type_hints(schema)
    known = {f.name: f for f in dataclasses.fields(schema)}
    values: dict[str, Any] = {}
    for key, sub in item.value.items():
        sub_path = f"{path}.{key}" if path else key
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else \
                f"; known keys: {', '.join(known)}"
            problems.add(item.key_locs.get(key, sub.loc), sub_path, f"unknown key{hint}")
            continue
        values[key] = _check_value(hints[key], sub, sub_path, problems, dict(known[key].metadata))
    for name, f in known.items():
        required = f.default is MISSING and f.default_factory is MISSING
        if required and name not in item.value:
            problems.add(item.loc, f"{path}.{name}" if path else name,
                         f"missing required key: {f.metadata.get('help', '')}".rstrip(": "))
    if hasattr(schema, "cross_check"):
        schema.cross_check(item, problems, path)
    if MISSING in values.values() or any(
            f.default is MISSING and f.default_factory is MISSING and n not in values
            for n, f in known.items()):
        return MISSING
    return schema(**values)


# ----------------------------------------------------------------------------------------------
# Entry points


def load_config(schema: type, path: Path | None, overrides: list[tuple[str, Item]] = ()) -> Any:
    """Read `path` (or nothing), apply overrides in order, and return a checked `schema` instance.

    Raises UsageError with one line per problem.
    """
    problems = _Problems()
    if path is None:
        root = Item({}, Loc("(command line)"))
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read config: {exc.strerror}; check the path")
        root = parse_yaml(text, str(path), problems)
        if not isinstance(root.value, dict):
            raise UsageError(f"{root.loc}: (top level): expected a mapping of keys, got "
                             f"{_show(root.value)}")
    for key, item in overrides:
        apply_override(root, key, item)
    config = check(schema, root, problems)
    if problems:
        raise UsageError(*problems)
    return config


def detect_kind(path: Path) -> str:
    """Which KINDS entry a config file is, from its keys (generate when nothing else fits)."""
    root = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path), _Problems())
    keys = set(root.value) if isinstance(root.value, dict) else set()
    for kind, schema in KINDS.items():
        marker = getattr(schema, "KIND_MARKER", None)
        if marker and marker in keys:
            return kind
    return "generate"


def to_dict(config: Any) -> dict:
    """A config as plain data (for config.yaml); every default filled in."""
    return dataclasses.asdict(config)


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def describe(schema: type, indent: str = "") -> list[str]:
    """The schema as documented YAML lines (for README and `acr validate --schema`)."""
    lines = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{indent}{f.name}:  # {help_text}")
            lines += describe(tp, indent + "  ")
            continue
        if f.default is not MISSING:
            default = yaml.safe_dump(f.default, default_flow_style=True).strip()
            default = default.removesuffix("\n...").removesuffix("...").strip()
        elif f.default_factory is not MISSING:
            default = yaml.safe_dump(f.default_factory(), default_flow_style=True).strip()
        else:
            default = "(required)"
        lines.append(f"{indent}{f.name}: {default}  # {help_text}")
    return lines
