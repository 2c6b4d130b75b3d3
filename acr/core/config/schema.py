"""Config schemas: one dataclass per config kind, every field documented with its limits.

`acr validate`, the README and `--help` read the help texts from here; `loader.py` checks YAML
against these classes and reports every problem with its file, line and column.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass
from typing import Any, ClassVar, Literal, Optional, Union

from acr.core.config.loader import Item, Problems, opt
from acr.core.errors import UsageError
from acr.core.models import (DEFAULT_CLIP, DEFAULT_MUSIC_MODEL, DEFAULT_SFX_MODEL, MELODY_MODELS,
                             may_have_melody)


def nonempty(text: str) -> str | None:
    return None if text.strip() else "must not be empty"


def model_problem(name: str) -> str | None:
    """Why `name` is not a model acr can resolve (checked without importing torch), or None."""
    from acr.core.models import resolve_model, unsupported

    try:
        return unsupported(resolve_model(name))
    except UsageError as exc:
        return exc.lines[0]


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


def model_field(default: Any = DEFAULT_MUSIC_MODEL) -> Any:
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
    model: Optional[str] = opt(None, f"Model for this stem; null = {DEFAULT_MUSIC_MODEL} for "
                               f"music, {DEFAULT_SFX_MODEL} for sfx.", validate=model_problem)
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

    music_model: str = opt(DEFAULT_MUSIC_MODEL, "Model of the music stems (MusicGen).",
                           validate=model_problem)
    sfx_model: str = opt(DEFAULT_SFX_MODEL, "Model of the effects stems (AudioGen).",
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
class ImagePrompt:
    """A prompt described from an image: CLIP ranks the vocabulary's phrases against the image
    and the vocabulary's template makes the text prompt (image-to-text ranking; the audio
    models never see the image)."""

    image: str = opt(MISSING, "Image file (PNG, JPEG, GIF: first frame, WebP, BMP, TIFF); "
                     "relative to the config file's folder.", validate=nonempty)
    text: Optional[str] = opt(None, "Text that steers the ranking: its CLIP embedding is "
                              "blended with the image's by `weight`. The prompt holds it only "
                              "where the vocabulary's template names {text}.", validate=nonempty)
    weight: float = opt(0.5, "How much the image counts against `text` when ranking: 1 = the "
                        "image alone, 0 = the text alone; unused without `text`.", ge=0, le=1)

    @staticmethod
    def cross_check(item: Item, problems: Problems, path: str) -> None:
        from acr.core.image_prompts import image_problems

        image_problems(item, problems, path)


def clip_model_field() -> Any:
    return opt(DEFAULT_CLIP, "CLIP model that describes `image` prompts: a Hugging Face id (from "
               "the local cache) or a local folder.", validate=nonempty)


def vocabulary_field() -> Any:
    return opt(None, "Vocabulary file of `image` prompts (slots of phrases, caption and prompt "
               "templates); null = the default (acr/core/vocabulary.yaml). Relative to the "
               "config file's folder.", validate=nonempty)


def check_vocabulary(item: Item, problems: Problems) -> None:
    """The problems (FILE:LINE) of the vocabulary file a config names."""
    from acr.core.image_prompts import vocabulary_problem

    vocabulary = item.value.get("vocabulary")
    if vocabulary is not None and isinstance(vocabulary.value, str) and vocabulary.value.strip():
        problems.extend(vocabulary_problem(vocabulary.value, vocabulary.loc))


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


@dataclass
class GenerateConfig:
    """`acr generate`: prompts to one model, one batch, one parameter set."""

    KIND_MARKER: ClassVar[str] = "prompts"

    prompts: list[Union[str, ImagePrompt]] = opt(
        [], "Text prompts, or {image, text, weight} items described by CLIP; generated together "
        "as one batch (required unless `hybrid` is given).", items={"validate": nonempty})
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
    clip_model: str = clip_model_field()
    vocabulary: Optional[str] = vocabulary_field()

    @property
    def weights(self) -> list[str]:
        """The models this config loads (both stems of a hybrid mix)."""
        if self.hybrid is None:
            return [self.model]
        return [self.hybrid.music.model or DEFAULT_MUSIC_MODEL,
                self.hybrid.sfx.model or DEFAULT_SFX_MODEL]

    @staticmethod
    def cross_check(item: Item, problems: Problems, path: str) -> None:
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
            DEFAULT_MUSIC_MODEL
        if "melody" in given and not may_have_melody(name):
            problems.add(item.key_locs["melody"], "melody", f"model {name!r} has no melody "
                         f"(chroma) conditioning; use one of: {', '.join(MELODY_MODELS)}")
        check_vocabulary(item, problems)


@dataclass
class Launcher:
    """Where the work runs: here in one process (none), or through submitit on a Slurm cluster
    (slurm) or in local subprocesses that take the same path (local)."""

    kind: Literal["none", "local", "slurm"] = opt(
        "none", "none: run here, in this process; slurm: submit to a Slurm cluster through "
        "submitit (the run folder must be on a filesystem every node shares); local: the same "
        "sharded path in subprocesses on this machine (to try a launcher config first).")
    partition: Optional[str] = opt(None, "Slurm partition; null = the cluster's default.",
                                   validate=nonempty)
    time: int = opt(240, "Minutes each job (array task) may run (sbatch --time; local: a "
                    "timeout too); one that times out or is preempted is requeued and carries "
                    "on from what is on disk (samples, a fine-tune's last checkpoint).",
                    ge=1, le=525600)
    cpus_per_task: Optional[int] = opt(None, "CPU cores per task; null = the cluster's "
                                       "default.", ge=1, le=1024)
    mem_gb: Optional[float] = opt(None, "Memory per node in GB; null = the cluster's default.",
                                  gt=0)
    slurm: dict[str, str] = opt({}, "More sbatch options, as {option: value} without the "
                                "leading --, e.g. {account: my-lab, qos: high}; "
                                "--slurm-opt KEY=VALUE on the command line.")


@dataclass
class ExperimentLauncher(Launcher):
    """Launcher of `acr experiment`: a job array of `tasks`, each a fixed share of the batches."""

    tasks: int = opt(1, "Tasks of the job array; task k generates the batches whose index is k "
                     "modulo `tasks` (the bytes equal a one-process run's).", ge=1, le=10000)
    gpus_per_task: int = opt(1, "GPUs each task gets (Slurm --gpus-per-node; one task per "
                             "node).", ge=0, le=64)


@dataclass
class FinetuneLauncher(Launcher):
    """Launcher of `acr finetune`: one multi-node DDP job, a rank per GPU."""

    nodes: int = opt(1, "Nodes of the job.", ge=1, le=10000)
    gpus_per_node: int = opt(1, "GPUs per node; each GPU runs one rank.", ge=0, le=64)
    tasks_per_node: Optional[int] = opt(None, "Ranks per node; null = gpus_per_node (at least "
                                        "one). More than one without GPUs trains on CPU ranks "
                                        "(gloo).", ge=1, le=1024)


@dataclass
class WandbOptions:
    """A Weights & Biases run mirroring the run folder (files in RUN/wandb/)."""

    project: str = opt("acr", "W&B project.", validate=nonempty)
    entity: Optional[str] = opt(None, "W&B entity (user or team); null = your default.")
    tags: list[str] = opt([], "Tags of the W&B run.", items={"validate": nonempty})
    mode: Optional[Literal["online", "offline", "disabled"]] = opt(
        None, "online | offline | disabled; null = as WANDB_MODE says, else offline unless an "
        "API key is configured (WANDB_API_KEY or a ~/.netrc entry for api.wandb.ai), so "
        "nothing waits on the network. Sync an offline run later with `wandb sync RUN/wandb`.")


@dataclass
class TrackingOptions:
    """Optional mirrors of the run in experiment trackers; the run folder stays complete
    without them, and a tracker that fails costs a warning, never the run."""

    tensorboard: bool = opt(False, "Write TensorBoard event files to RUN/tensorboard/ "
                            "(`tensorboard --logdir RUN`).")
    wandb: Optional[WandbOptions] = opt(None, "Log to Weights & Biases: {project, entity, "
                                        "tags, mode} ({} for the defaults: project acr, as "
                                        "WANDB_MODE says, else offline unless an API key is "
                                        "configured).")
    audio_clips: int = opt(3, "Clips logged as audio per setting (experiment) or sample "
                           "round (finetune: every sample prompt up to this many).", ge=0,
                           le=1000)
    close_wait_seconds: float = opt(120.0, "How long the run waits at its end (and before an "
                                    "experiment's analysis) for a tracker to take every call "
                                    "and close; one that has not by then (stuck on its network "
                                    "or disk) is switched off and its process ended, with a "
                                    "warning. Raise it for large uploads over a slow network.",
                                    gt=0, le=86400)


def tracking_field() -> Any:
    return opt(TrackingOptions(), "Experiment tracking (TensorBoard, Weights & Biases); "
               "--track tensorboard|wandb turns one on. See the README's Tracking section.")


@dataclass
class Finding:
    """A finding recorded with a run (also added later by `acr experiment note`)."""

    title: str = opt(MISSING, "Short title.", validate=nonempty)
    description: str = opt("", "What was observed, and how.")


@dataclass
class ExperimentConfig:
    """`acr experiment`: prompt sets x parameter sets (x models) x samples."""

    KIND_MARKER: ClassVar[str] = "prompt_sets"
    # what `--resume` may change: it cannot change the samples' seeds or prompts
    RESUME_MAY_CHANGE: ClassVar[tuple[str, ...]] = ("device", "launcher", "tracking")

    name: str = opt(MISSING, "Experiment name: runs go to experiments/<name>/<timestamp>-<id>/.",
                    pattern=NAME_PATTERN, pattern_help=NAME_HELP)
    prompt_sets: dict[str, list[Union[str, ConditionedPrompt, HybridPrompt, ImagePrompt]]] = opt(
        MISSING, "Named lists of prompts, e.g. joy: [...], sadness: [...]; an item may be "
        "{text, melody}, {text, continuation: {audio, prompt_seconds}} or {image, text, "
        "weight} (described by CLIP), and in a hybrid experiment it is a {music, sfx} pair.", min_items=1, pattern=NAME_PATTERN,
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
    baseline: Optional[str] = opt(None, "The parameter set the analysis compares the others "
                                  "with (Fréchet distances, the * in its table); null = the set "
                                  "named `baseline`, else the first one. Recorded in "
                                  "experiment.json.")
    findings: list[Finding] = opt([], "Findings recorded with the run: [{title, description}].")
    hybrid: Optional[HybridExperiment] = opt(None, "Mix music and effects stems (instead of "
                                             "`model`): prompt-set items become {music, sfx} "
                                             "pairs, parameter sets may set `blend`.")
    clip_model: str = clip_model_field()
    vocabulary: Optional[str] = vocabulary_field()
    launcher: ExperimentLauncher = opt(ExperimentLauncher(), "Run the grid as a Slurm job "
                                       "array (or local subprocesses): see the README's "
                                       "\"Running on a cluster\".")
    tracking: TrackingOptions = tracking_field()

    @staticmethod
    def prepare(item: Item) -> None:
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
    def cross_check(item: Item, problems: Problems, path: str) -> None:
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
                        not may_have_melody(item.value["model"].value):
                    problems.add(prompt.value["melody"].loc, f"{where}.melody", f"model "
                                 f"{item.value['model'].value!r} has no melody (chroma) "
                                 f"conditioning; use one of: {', '.join(MELODY_MODELS)}")
        psets = item.value.get("parameter_sets")
        if given("baseline") and psets is not None and isinstance(psets.value, dict) and \
                item.value["baseline"].value not in psets.value:
            problems.add(item.value["baseline"].loc, "baseline",
                         f"{item.value['baseline'].value!r} names no parameter set; use one "
                         f"of: {', '.join(psets.value)}")
        for name, pset in (psets.value.items() if psets is not None and
                           isinstance(psets.value, dict) else []):
            if not hybrid and isinstance(pset.value, dict) and "blend" in pset.value and \
                    pset.value["blend"].value is not None:
                problems.add(pset.key_locs["blend"], f"parameter_sets.{name}.blend",
                             "blend needs a `hybrid:` section")
        check_vocabulary(item, problems)

    @property
    def baseline_set(self) -> str:
        """The baseline parameter set: `baseline`, else the set named baseline, else the first."""
        if self.baseline is not None:
            return self.baseline
        return "baseline" if "baseline" in self.parameter_sets else next(iter(self.parameter_sets))

    @property
    def model_names(self) -> list[str]:
        if self.hybrid is not None:
            return ["hybrid"]
        return list(self.models) if self.models else [self.model]

    @property
    def weights(self) -> list[str]:
        """The models this config loads (both stem models of a hybrid experiment)."""
        if self.hybrid is not None:
            return [self.hybrid.music_model, self.hybrid.sfx_model]
        return self.model_names


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
    # what `--resume` may change: the device, and epochs (more: a longer schedule from the
    # last checkpoint)
    RESUME_MAY_CHANGE: ClassVar[tuple[str, ...]] = ("device", "epochs", "launcher", "tracking")

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
    launcher: FinetuneLauncher = opt(FinetuneLauncher(), "Train as one multi-node DDP job on "
                                     "Slurm (or local subprocesses): see the README's "
                                     "\"Running on a cluster\".")
    tracking: TrackingOptions = tracking_field()


# The config kinds `acr validate` knows, and the key that tells each apart when not named.
KINDS: dict[str, type] = {"generate": GenerateConfig, "experiment": ExperimentConfig,
                          "finetune": FinetuneConfig}




def check_kind(path, expected: str) -> None:
    """UsageError when the config file at `path` is clearly another command's (it has that
    kind's marker key and not `expected`'s), naming the command to run instead."""
    from acr.core.config.loader import marked_kinds

    def a(kind: str) -> str:
        return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} config"

    found = marked_kinds(path, KINDS)
    if found and expected not in found:
        kind = found[0]
        raise UsageError(f"{path}: this is {a(kind)} (it has `{KINDS[kind].KIND_MARKER}`), not "
                         f"{a(expected)}: run `acr {kind} {path}`")


def config_kind(path) -> str:
    """Which KINDS entry a config file is, from its keys (generate when nothing else fits)."""
    from acr.core.config.loader import detect_kind

    return detect_kind(path, KINDS, "generate")
