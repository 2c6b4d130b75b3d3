"""The only place that touches audiocraft's model loaders.

`resolve_model(name)` turns what a user wrote (a short name, a Hugging Face id, a local folder in
AudioCraft's release layout, or a built-in tiny model) into a ModelSpec without importing torch;
`load_model(name, device)` loads it once per process through audiocraft's own `get_pretrained`.
The tiny models are real AudioCraft models (a 2-layer LM and a small SEANet codec) written in the
release layout under `$ACR_HOME/models/`, so tests exercise the same code as real checkpoints.
The random models (`random-musicgen-small`, ...) are the released architectures with random
weights, built the same way: real compute and memory for speed work, no music.
"""
from __future__ import annotations

import difflib
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acr.core.errors import UsageError

# short name -> (Hugging Face id, family)
SHORT_NAMES: dict[str, tuple[str, str]] = {
    **{f"musicgen-{s}": (f"facebook/musicgen-{s}", "musicgen")
       for s in ("small", "medium", "large", "melody", "melody-large", "stereo-small",
                 "stereo-medium", "stereo-large", "stereo-melody", "stereo-melody-large")},
    "audiogen-medium": ("facebook/audiogen-medium", "audiogen"),
    **{f"magnet-{s}": (f"facebook/magnet-{s}", "magnet")
       for s in ("small-10secs", "medium-10secs", "small-30secs", "medium-30secs")},
    **{f"audio-magnet-{s}": (f"facebook/audio-magnet-{s}", "magnet") for s in ("small", "medium")},
}
DEFAULT_MUSIC_MODEL = "musicgen-small"
DEFAULT_SFX_MODEL = "audiogen-medium"
MELODY_MODELS = ["musicgen-melody", "musicgen-melody-large", "musicgen-stereo-melody",
                 "musicgen-stereo-melody-large"]
DEFAULT_CLAP = "laion/clap-htsat-unfused"  # CLAP for prompt alignment and FAD (acr analyze)
DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # CLIP for prompts from images
TINY = {"tiny-musicgen": ("musicgen", 32000), "tiny-audiogen": ("audiogen", 16000)}
TINY_VERSION = 1  # bump when the tiny recipe changes: a new folder is built beside the old one
# random-weight models with the released architectures: name -> (family, sample rate, LM scale)
RANDOM = {"random-musicgen-small": ("musicgen", 32000, "small"),
          "random-musicgen-medium": ("musicgen", 32000, "medium"),
          "random-musicgen-large": ("musicgen", 32000, "large"),
          "random-audiogen-medium": ("audiogen", 16000, "medium")}
RANDOM_VERSION = 1  # bump when the random recipe changes
RANDOM_LABEL = "random weights: for speed and memory work only"
RELEASE_FILES = ("state_dict.bin", "compression_state_dict.bin")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the user wrote it
    source: str  # what get_pretrained receives: a Hugging Face id or a folder path
    family: str  # musicgen | audiogen | magnet
    kind: str  # hub | folder | tiny | random


def known_names() -> list[str]:
    """The names acr can generate with (MAGNeT's resolve, but are refused: see `unsupported`)."""
    return [*TINY, *(name for name, (_, family) in SHORT_NAMES.items() if family != "magnet"),
            *RANDOM]


def may_have_melody(name: str) -> bool:
    """False for names known to lack chroma conditioning (folders and hub ids: checked on load)."""
    if name in TINY or name in RANDOM or name in SHORT_NAMES:
        return name in MELODY_MODELS
    return not name.startswith(("facebook/musicgen-", "facebook/audiogen", "facebook/magnet")) \
        or "melody" in name


RELEASED_WINDOWS = {"musicgen": 30.0, "audiogen": 10.0}  # max_duration of released models


def model_window(name: str) -> float | None:
    """A model's window (its max_duration, seconds) without loading it: from the name for the
    tiny and the released models, from a folder's xp.cfg; None where only loading tells."""
    spec = resolve_model(name)
    if spec.kind in ("tiny", "random"):
        return float(builtin_model_config(name)["dataset"]["segment_duration"])
    if name in SHORT_NAMES:
        return RELEASED_WINDOWS.get(spec.family)
    if spec.kind == "folder":
        try:
            import yaml

            from acr.core.safe_load import load_checkpoint

            pkg = load_checkpoint(Path(spec.source) / "state_dict.bin", mmap=True)

            return float(yaml.safe_load(pkg["xp.cfg"])["dataset"]["segment_duration"])
        except Exception:  # not readable here: loading the model reports it
            return None
    return None


def acr_home() -> Path:
    """User cache folder of acr (tiny models, ...): $ACR_HOME, else $XDG_CACHE_HOME/acr."""
    if os.environ.get("ACR_HOME"):
        return Path(os.environ["ACR_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "acr"


def tiny_model_dir(name: str) -> Path:
    """Where a built-in model (tiny or random) is cached, by name and recipe version."""
    version = RANDOM_VERSION if name in RANDOM else TINY_VERSION
    return acr_home() / "models" / f"{name}-v{version}"


def resolve_model(name: str) -> ModelSpec:
    """What `name` refers to; UsageError (listing the known names) when it is nothing."""
    if name in TINY:
        return ModelSpec(name, str(tiny_model_dir(name)), TINY[name][0], "tiny")
    if name in RANDOM:
        return ModelSpec(name, str(tiny_model_dir(name)), RANDOM[name][0], "random")
    if name in SHORT_NAMES:
        hub_id, family = SHORT_NAMES[name]
        return ModelSpec(name, hub_id, family, "hub")
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [f for f in RELEASE_FILES if not (path / f).is_file()]
        if missing:
            raise UsageError(f"model folder {path}: missing {', '.join(missing)}; a model folder "
                             "needs AudioCraft's release layout (state_dict.bin and "
                             "compression_state_dict.bin), as written by `acr finetune`")
        return ModelSpec(name, str(path), "", "folder")  # family read from xp.cfg at load time
    if name.startswith("facebook/"):
        short = name.removeprefix("facebook/")
        family = next((f for short_name, (hub, f) in SHORT_NAMES.items() if hub == name), None)
        if family is None:
            family = "audiogen" if short.startswith("audiogen") else \
                "magnet" if "magnet" in short else "musicgen"
        return ModelSpec(name, name, family, "hub")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not path.exists():
        return ModelSpec(name, name, "musicgen", "hub")  # someone's own hub repo
    if any(c in name for c in "/\\") or name.startswith("."):
        raise UsageError(f"model {name!r}: no such folder; give a folder in AudioCraft's release "
                         "layout, a Hugging Face id (owner/name) or one of: "
                         f"{', '.join(known_names())}")
    close = difflib.get_close_matches(name, known_names(), n=1, cutoff=0.9)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"unknown model {name!r}{hint}; known models: {', '.join(known_names())} "
                     "(or a Hugging Face id, or a local model folder)")


def unsupported(spec: ModelSpec) -> str | None:
    """Why acr cannot drive a model of this (known) family, or None. MAGNeT is refused from its
    name or its folder's config, before any weights load or download."""
    if spec.family == "magnet":
        return (f"model {spec.name!r} is a MAGNeT model: acr drives MusicGen and AudioGen only "
                "(MAGNeT's parameters differ); use a musicgen-* or audiogen-* model")
    return None


# ----------------------------------------------------------------------------------------------
# Devices


def resolve_device(device: str) -> str:
    """auto | cpu | cuda | cuda:N | mps -> a torch device string that exists here."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r}: CUDA is not available here (torch "
                             f"{torch.__version__} sees no NVIDIA GPU); use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) "
                             f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one "
                             "of those or use --device cpu")
        return device
    if device == "mps" and not (getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        raise UsageError("device 'mps': Apple MPS is not available here; use --device cpu")
    return device


def device_name(device: str) -> str:
    """Human name of a device (the GPU model for CUDA)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return device


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # audiocraft MusicGen | AudioGen | MAGNeT
    family: str
    device: str

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.model.audio_channels)

    @property
    def max_duration(self) -> float:
        return float(self.model.max_duration)

    @property
    def frame_rate(self) -> float:
        return float(self.model.frame_rate)

    @property
    def has_chroma(self) -> bool:
        """Whether the model takes a melody (chroma) condition: the melody models."""
        return "self_wav" in self.model.lm.condition_provider.conditioners


_LOADED: dict[tuple[str, str], LoadedModel] = {}


@contextmanager
def _without_wandb():
    """audiocraft imports flashy, whose loggers import wandb where it is installed (0.2-0.5 s
    here, and a temporary folder that a killed process leaves behind) for a logger acr never
    uses: acr's W&B tracker imports wandb in a process of its own. While audiocraft is
    imported, wandb reads as not installed (flashy's logger then has none); an `import wandb`
    afterwards, in this process, works as ever. Where wandb is imported already, nothing
    changes."""
    if "wandb" in sys.modules:
        yield
        return
    sys.modules["wandb"] = None  # (an import of it raises ModuleNotFoundError)
    try:
        yield
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"] is None:
            del sys.modules["wandb"]


def import_audiocraft() -> Any:
    """Import audiocraft quietly (xformers' harmless C++-extension warning) with torch attention,
    without wandb (_without_wandb)."""
    import logging
    import warnings

    logging.getLogger("xformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
    with _without_wandb():
        import audiocraft.models
    from audiocraft.modules.transformer import set_efficient_attention_backend

    set_efficient_attention_backend("torch")
    return audiocraft.models


def load_model(name: str, device: str = "auto") -> LoadedModel:
    """Resolve and load a model (once per process and device, until `release_model`)."""
    spec = resolve_model(name)
    if not any(source == spec.source for source, _ in _LOADED):
        check_weights([name])  # first: a missing download is reported in a second or two
    device = resolve_device(device)
    key = (spec.source, device)
    if key not in _LOADED:
        _LOADED[key] = _load(spec, device)
    return _LOADED[key]


def release_model(name: str, device: str) -> None:
    """Drop a model from the process cache and give its memory back (GPU memory included), so
    the next model of a model axis loads into the room it leaves. Callers drop their own
    references to it first."""
    import gc

    spec = resolve_model(name)
    device = resolve_device(device)
    if _LOADED.pop((spec.source, device), None) is None:
        return
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def loaded_models() -> list[tuple[str, str]]:
    """(source, device) of every model this process holds loaded."""
    return list(_LOADED)


def load_for_training(name: str, device: str = "auto") -> LoadedModel:
    """A fresh (uncached) copy to train: the LM in float32 on `device` (AudioCraft loads fp16
    weights on GPUs; training keeps fp32 master weights and autocasts instead)."""
    loaded = _load(resolve_model(name), resolve_device(device))
    loaded.model.lm.float()
    return loaded


def _load(spec: ModelSpec, device: str) -> LoadedModel:
    models = import_audiocraft()
    if spec.kind in ("tiny", "random"):
        if spec.kind == "random":
            from acr.core import console

            console.warn(f"model {spec.name!r}: {RANDOM_LABEL} (its audio is noise)")
        ensure_tiny_model(spec.name)
    problem = unsupported(spec)  # known from the name: refused before any download
    if problem:
        raise UsageError(problem)
    try:
        # the files audiocraft's loaders will read, read safely first (a file that would run
        # code, or is no checkpoint, is refused before audiocraft touches it)
        lm_pkg, _ = release_checkpoints(spec, mmap=True)
        family = spec.family or _family(lm_pkg)
        del lm_pkg
        problem = unsupported(ModelSpec(spec.name, spec.source, family, spec.kind))
        if problem:  # a folder's family, from its config: refused before the weights load
            raise UsageError(problem)
        cls = {"musicgen": models.MusicGen, "audiogen": models.AudioGen}[family]
        model = cls.get_pretrained(spec.source, device=device)
    except ModuleNotFoundError as exc:
        if exc.name == "demucs":  # melody models split stems with demucs
            raise UsageError(f"model {spec.name!r} needs the demucs package for its melody "
                             "conditioning: pip install demucs==4.0.1 (the version of acr's "
                             "requirements.txt)") from exc
        raise
    except UsageError:
        raise
    except Exception as exc:
        if _is_demucs_download_error(exc):
            raise UsageError(_demucs_weights_message(spec)) from exc
        if spec.kind == "hub" and _is_fetch_error(exc):
            raise UsageError(*offline_message({spec: missing_hub_files(spec)},
                                              f"the download failed ({_first_line(exc)})")
                             ) from exc
        raise
    return LoadedModel(spec, model, family, device)


def _family(pkg: dict) -> str:
    """musicgen | audiogen | magnet, from a release LM checkpoint's xp.cfg."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(pkg["xp.cfg"])
    if cfg.get("lm_model") == "transformer_lm_magnet":
        return "magnet"
    return "audiogen" if str(cfg.get("solver", "")).startswith("audiogen") else "musicgen"


def release_paths(spec: ModelSpec) -> list[Path]:
    """The LM and compression checkpoint files of a model, where audiocraft's loaders read them
    (a hub model's from the Hugging Face cache, downloaded the way audiocraft does)."""
    if spec.kind != "hub":
        return [Path(spec.source) / f for f in RELEASE_FILES]
    import_audiocraft()
    import audiocraft
    from huggingface_hub import hf_hub_download

    return [Path(hf_hub_download(repo_id=spec.source, filename=f,
                                 cache_dir=os.environ.get("AUDIOCRAFT_CACHE_DIR"),
                                 library_name="audiocraft",
                                 library_version=audiocraft.__version__))
            for f in RELEASE_FILES]


def release_checkpoints(spec: ModelSpec, mmap: bool = False) -> tuple[dict, dict]:
    """The LM and compression checkpoints of a model, {best_state, xp.cfg, ...} each, read
    through acr's safe loader (what a fine-tuned release folder is built from; `mmap` maps the
    weights instead of reading them). UsageError when a file would run code or is not an
    AudioCraft release checkpoint."""
    from acr.core.safe_load import UnreadableFile, load_checkpoint

    where = f"model folder {spec.source}" if spec.kind == "folder" else f"model {spec.name!r}"
    packages = []
    for path in release_paths(spec):
        try:
            pkg = load_checkpoint(path, mmap=mmap, hint="; a model folder holds AudioCraft "
                                  "release checkpoints (tensors and plain values only)")
        except UnreadableFile as exc:
            raise UsageError(f"{where}: not an AudioCraft model folder ({path.name} is not a "
                             f"torch checkpoint: {exc.lines[0]})") from exc
        if not isinstance(pkg, dict) or not ({"best_state", "xp.cfg"} <= set(pkg)
                                             or "pretrained" in pkg):
            raise UsageError(f"{where}: not an AudioCraft model folder ({path.name} holds no "
                             "best_state and xp.cfg)")
        packages.append(pkg)
    if "xp.cfg" not in packages[0]:
        raise UsageError(f"{where}: not an AudioCraft model folder ({RELEASE_FILES[0]} holds "
                         "no best_state and xp.cfg)")
    return packages[0], packages[1]


def _is_fetch_error(exc: BaseException) -> bool:
    names = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError",
             "ConnectTimeout", "HfHubHTTPError", "RepositoryNotFoundError", "EntryNotFoundError"}
    while exc is not None:
        if type(exc).__name__ in names or "huggingface" in str(exc).lower() or \
                "offline" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"


# ----------------------------------------------------------------------------------------------
# Weights from the Hugging Face hub: checked against the local cache before anything loads

TEXT_ENCODER = "t5-base"  # the text encoder of the released models, a repository of its own
PROBE_SECONDS = 2.0  # how long the hub may take to answer before acr calls it unreachable


def hub_offline() -> bool:
    """Whether huggingface_hub runs in offline mode (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_problem(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub cannot be reached (None when it answers within `timeout` s).

    The request runs in a daemon thread, so a DNS lookup that hangs (which no socket timeout
    covers) cannot hold the caller longer than `timeout`."""
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    answer: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"),
                                   timeout=timeout)
            answer.append(None)
        except urllib.error.HTTPError:  # an HTTP status is an answer
            answer.append(None)
        except Exception as exc:  # any other failure: not reachable from here
            answer.append(_first_line(exc))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"no answer within {timeout:g} s"


def missing_hub_files(spec: ModelSpec) -> list[str]:
    """The files of a hub model (and its text encoder) missing from the local Hugging Face
    cache, as repo/file; empty for tiny models and folders."""
    if spec.kind != "hub":
        return []
    from huggingface_hub import try_to_load_from_cache

    wanted = [(spec.source, f) for f in RELEASE_FILES] + [(TEXT_ENCODER, "config.json")]
    return [f"{repo}/{f}" for repo, f in wanted
            if not isinstance(try_to_load_from_cache(repo, f), str)]


_HUB_ANSWERED: list[bool] = []  # the hub answered this process's probe


def check_weights(names: list[str]) -> None:
    """Fail fast when hub weights are neither cached nor downloadable.

    Every model's missing files are named in one UsageError when huggingface_hub is offline or
    the hub does not answer within PROBE_SECONDS (instead of huggingface_hub's retries, about
    half a minute per file). When everything is cached but the hub does not answer, offline
    mode is switched on for this process, so loading does not wait on the network either."""
    from huggingface_hub import constants

    hub = [spec for spec in dict.fromkeys(resolve_model(n) for n in names) if spec.kind == "hub"]
    if not hub:
        return
    missing = {spec: files for spec in hub if (files := missing_hub_files(spec))}
    if hub_offline():
        if missing:
            raise UsageError(*offline_message(missing, "HF_HUB_OFFLINE is set"))
        return
    problem = None if _HUB_ANSWERED else hub_problem()
    if problem is None:
        _HUB_ANSWERED.append(True)  # asked once per process
        return  # what is missing downloads when the model loads
    if missing:
        raise UsageError(*offline_message(
            missing, f"the Hugging Face hub ({constants.ENDPOINT}) does not answer: {problem}"))
    constants.HF_HUB_OFFLINE = True  # all cached: load from the cache, no network retries
    os.environ["HF_HUB_OFFLINE"] = "1"


def offline_message(missing: dict[ModelSpec, list[str]], reason: str) -> list[str]:
    """One line per model naming its missing files, then how to get them."""
    from huggingface_hub import constants

    lines = [f"model {spec.name!r} ({spec.source}): the local Hugging Face cache "
             f"({constants.HF_HUB_CACHE}) lacks {', '.join(files) or '(files present but unreadable)'}"
             for spec, files in missing.items()]
    repos = [spec.source for spec in missing]
    if any(f.startswith(f"{TEXT_ENCODER}/") for files in missing.values() for f in files):
        repos.append(TEXT_ENCODER)
    commands = " and ".join(f"`hf download {repo}`" for repo in repos)
    then = "copy the cache folder here" if hub_offline() else \
        "copy the cache folder here and set HF_HUB_OFFLINE=1"
    lines.append(f"cannot download {'it' if len(missing) == 1 else 'them'}: {reason}. On a "
                 f"connected machine run {commands}, then {then}")
    return lines


# ----------------------------------------------------------------------------------------------
# demucs (melody models): its htdemucs weights come from dl.fbaipublicfiles.com into torch's
# hub cache on first use

HTDEMUCS_FILE = "955717e8-8726e21a.th"  # the one model of demucs' `htdemucs` bag


def _is_demucs_download_error(exc: BaseException | None) -> bool:
    """An OSError (URLError included) raised inside demucs: its weights could not download."""
    import traceback

    while exc is not None:
        if isinstance(exc, OSError) and any(
                f"{os.sep}demucs{os.sep}" in frame.filename
                for frame in traceback.extract_tb(exc.__traceback__)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _demucs_weights_message(spec: ModelSpec) -> str:
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / HTDEMUCS_FILE
    return (f"model {spec.name!r}: its melody conditioning needs demucs' htdemucs weights, "
            f"which are not in {target.parent} and cannot be downloaded here; on a connected "
            f"machine run `python -c \"from demucs import pretrained; "
            f"pretrained.get_model('htdemucs')\"` and copy {target} to the same place here")


# ----------------------------------------------------------------------------------------------
# Released architectures: the one place for their shapes (the random models, `acr doctor`)
#
# From AudioCraft's own configs (github.com/facebookresearch/audiocraft, commit bf70522):
#   config/model/lm/model_scale/{small,medium,large}.yaml   dim / num_heads / num_layers
#   config/model/lm/musicgen_lm.yaml (commit 201b542), audiogen_lm.yaml   n_q 4, card 2048,
#       delay pattern [0, 1, 2, 3], pre-norm, no biases, gaussian init; lm/default.yaml:
#       hidden_scale 4, gelu, sin positional embedding, layer_norm
#   config/conditioner/text2music.yaml (t5-base), text2sound.yaml (t5-large): cross-attention
#       on the description, classifier-free guidance dropout 0.3 / 0.1, coefficient 3.0
#   config/model/encodec/default.yaml + encodec_large_nq4_s640.yaml (MusicGen, 32 kHz, ratios
#       [8, 5, 4, 4]: 50 frames/s) / encodec_large_nq4_s320.yaml (AudioGen, 16 kHz, ratios
#       [8, 5, 4, 2]: 50 frames/s): SEANet dimension 128, 64 filters, 2 LSTM layers, RVQ 4 x 2048
#   audiocraft/grids/musicgen/musicgen_base_32khz.py: medium and large are model_scale medium /
#       large; grids/audiogen/audiogen_base_16khz.py: audiogen-medium is model_scale medium


@dataclass(frozen=True)
class LMScale:
    """The transformer shape of a released LM size."""
    dim: int
    num_heads: int
    num_layers: int


LM_SCALES = {"small": LMScale(1024, 16, 24), "medium": LMScale(1536, 24, 48),
             "large": LMScale(2048, 32, 48)}
LM_HIDDEN_SCALE = 4  # feed-forward size = 4 x dim
LM_CARD = 2048  # entries per codebook
LM_CODEBOOKS = 4  # mono models; the stereo ones interleave 8
TEXT_DIMS = {"musicgen": 768, "audiogen": 1024}  # T5 output size: t5-base / t5-large
SEANET_RATIOS = {32000: [8, 5, 4, 4], 16000: [8, 5, 4, 2]}
CFG_DROPOUT = {"musicgen": 0.3, "audiogen": 0.1}
LUT_BINS = 1024  # the random models' text table (hashed whole descriptions) in place of T5


def released_scale(name: str) -> str:
    """small | medium | large of a released (or random) model name."""
    if "large" in name:
        return "large"
    return "small" if "small" in name else "medium"


def lm_parameter_count(scale: str, family: str = "musicgen", codebooks: int = LM_CODEBOOKS) -> int:
    """Parameters of a released LM (what `lm.parameters()` holds; T5 itself is frozen outside the
    state dict, its output projection is in): per layer self- and cross-attention 4 d^2 each (fused
    q/k/v + output, no biases), feed-forward 2 x 4 d^2, three layer norms 2 d each; the K codebook
    embeddings (card + 1 with the special token) and K output heads; the final norm; the text
    projection. musicgen-small: 420,371,456, as counted on the released weights
    (github.com/facebookresearch/audiocraft/issues/169)."""
    d, layers = LM_SCALES[scale].dim, LM_SCALES[scale].num_layers
    layer = 4 * d * d + 4 * d * d + 2 * d * LM_HIDDEN_SCALE * d + 3 * 2 * d
    embeddings = codebooks * (LM_CARD + 1) * d
    heads = codebooks * d * LM_CARD
    text_projection = TEXT_DIMS[family] * d + d
    return layers * layer + embeddings + heads + 2 * d + text_projection


def random_model_config(name: str) -> dict:
    """AudioCraft config of a random model: the released LM and EnCodec architectures (above);
    the text conditioner is a `lut` table of T5's output size instead of T5 (whose weights cannot
    be had offline), so the LM, its cross-attention and the text projection are the released
    ones."""
    family, sample_rate, size = RANDOM[name]
    scale = LM_SCALES[size]
    cfg = tiny_model_config(f"tiny-{family}")
    cfg["seanet"].update(dimension=128, n_filters=64, ratios=SEANET_RATIOS[sample_rate], lstm=2)
    # kmeans_init stays off (released: on, then trained): random codebooks, same compute
    cfg["rvq"].update(n_q=LM_CODEBOOKS, bins=LM_CARD)
    cfg["transformer_lm"].update(dim=scale.dim, num_heads=scale.num_heads,
                                 num_layers=scale.num_layers, hidden_scale=LM_HIDDEN_SCALE,
                                 n_q=LM_CODEBOOKS, card=LM_CARD, memory_efficient=True)
    cfg["conditioners"]["description"]["lut"].update(n_bins=LUT_BINS, dim=TEXT_DIMS[family])
    cfg["classifier_free_guidance"]["training_dropout"] = CFG_DROPOUT[family]
    return cfg


def builtin_model_config(name: str) -> dict:
    """AudioCraft config of a built-in model (tiny or random)."""
    return tiny_model_config(name) if name in TINY else random_model_config(name)


# ----------------------------------------------------------------------------------------------
# Tiny models


def tiny_model_config(name: str) -> dict:
    """AudioCraft config of a tiny model: a 2-layer dim-64 LM over 4 codebooks of 256 entries and
    a SEANet codec at 50 frames/s. The `lut` conditioner with the `noop` tokenizer needs no
    download (the `whitespace` tokenizer of audiocraft's own debug model would ask spacy for one)."""
    family, sample_rate = TINY[name]
    ratios = [10, 8, 8] if sample_rate == 32000 else [10, 8, 4]
    return {
        "solver": family, "device": "cpu", "dtype": "float32",
        "sample_rate": sample_rate, "channels": 1,
        "compression_model": "encodec",
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": sample_rate,
                    "channels": 1, "causal": False, "renormalize": False},
        "seanet": {"dimension": 32, "channels": 1, "causal": False, "n_filters": 4,
                   "n_residual_layers": 1, "ratios": ratios, "activation": "ELU",
                   "activation_params": {"alpha": 1.0}, "norm": "weight_norm", "norm_params": {},
                   "kernel_size": 7, "last_kernel_size": 7, "residual_kernel_size": 3,
                   "dilation_base": 2, "pad_mode": "constant", "true_skip": True, "compress": 2,
                   "lstm": 0, "disable_norm_outer_blocks": 0, "encoder": {}, "decoder": {}},
        "rvq": {"n_q": 4, "q_dropout": False, "bins": 256, "decay": 0.99, "kmeans_init": False,
                "kmeans_iters": 50, "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0,
                "orthogonal_reg_active_codes_only": False},
        "lm_model": "transformer_lm",
        "transformer_lm": {"dim": 64, "num_heads": 4, "num_layers": 2, "hidden_scale": 4,
                           "n_q": 4, "card": 256, "dropout": 0.0, "emb_lr": None,
                           "activation": "gelu", "norm_first": True, "bias_ff": False,
                           "bias_attn": False, "bias_proj": False, "past_context": None,
                           "causal": True, "custom": False, "memory_efficient": False,
                           "attention_as_float32": False, "layer_scale": None,
                           "positional_embedding": "sin", "xpos": False, "checkpointing": "none",
                           "weight_init": "gaussian", "depthwise_init": "current",
                           "zero_bias_init": True, "norm": "layer_norm",
                           "cross_attention": False},
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3],
                                                             "flatten_first": 0,
                                                             "empty_initial": 0}},
        "attribute_dropout": {},
        "classifier_free_guidance": {"training_dropout": 0.3, "inference_coef": 3.0},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
                  "sum": [], "prepend": [], "cross": ["description"], "input_interpolate": []},
        "conditioners": {"description": {"model": "lut", "lut": {"n_bins": 256, "dim": 64,
                                                                   "tokenizer": "noop"}}},
        # the model's window (max_duration): 30 s like the real MusicGen, 10 s like AudioGen
        "dataset": {"segment_duration": 30.0 if family == "musicgen" else 10.0},
    }


def write_release_folder(folder: Path, cfg: dict, lm_state: dict, compression_state: dict) -> None:
    """Write a model folder in AudioCraft's release layout, atomically (one folder rename)."""
    import shutil
    import tempfile

    import_audiocraft()
    import audiocraft
    import torch
    from omegaconf import OmegaConf

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        xp_cfg = OmegaConf.to_yaml(OmegaConf.create(cfg))
        for filename, state in zip(RELEASE_FILES, (lm_state, compression_state)):
            torch.save({"best_state": state, "xp.cfg": xp_cfg, "version": audiocraft.__version__,
                        "exported": True}, tmp / filename)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its folder
            if not all((folder / f).is_file() for f in RELEASE_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_tiny_model(name: str) -> Path:
    """Build a built-in model (tiny or random) into $ACR_HOME/models/ once (deterministic
    weights), return its folder. A random model's LM is stored in float16, as the released
    checkpoints are (about 0.8 GB for random-musicgen-small); AudioCraft's loader casts it."""
    folder = tiny_model_dir(name)
    if all((folder / f).is_file() for f in RELEASE_FILES):
        return folder
    import torch
    from omegaconf import OmegaConf

    builders = import_audiocraft().builders
    cfg = builtin_model_config(name)
    omega = OmegaConf.create(cfg)
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(1234)
        compression = builders.get_compression_model(omega)
        lm = builders.get_lm_model(omega)
    finally:
        torch.random.set_rng_state(rng_state)
    if name in RANDOM:
        lm.half()
    write_release_folder(folder, cfg, lm.state_dict(), compression.state_dict())
    return folder


@dataclass
class ModelParts:
    lm: Any  # audiocraft LMModel
    compression: Any  # audiocraft CompressionModel


def build_on_meta(name: str) -> ModelParts:
    """A built-in model's LM and codec on torch's meta device: their exact shapes and parameter
    counts at no memory or time cost (for checks; they hold no weights and cannot run)."""
    import torch
    from omegaconf import OmegaConf

    builders = import_audiocraft().builders
    cfg = OmegaConf.create({**builtin_model_config(name), "device": "meta"})
    with torch.device("meta"):
        return ModelParts(builders.get_lm_model(cfg), builders.get_compression_model(cfg))
