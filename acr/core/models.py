"""The only place that touches audiocraft's model loaders.

`resolve_model(name)` turns what a user wrote (a short name, a Hugging Face id, a local folder in
AudioCraft's release layout, or a built-in tiny model) into a ModelSpec without importing torch;
`load_model(name, device)` loads it once per process through audiocraft's own `get_pretrained`.
The tiny models are real AudioCraft models (a 2-layer LM and a small SEANet codec) written in the
release layout under `$ACR_HOME/models/`, so tests exercise the same code as real checkpoints.
"""
from __future__ import annotations

import os
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
TINY = {"tiny-musicgen": ("musicgen", 32000), "tiny-audiogen": ("audiogen", 16000)}
TINY_VERSION = 1  # bump when the tiny recipe changes: a new folder is built beside the old one
RELEASE_FILES = ("state_dict.bin", "compression_state_dict.bin")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the user wrote it
    source: str  # what get_pretrained receives: a Hugging Face id or a folder path
    family: str  # musicgen | audiogen | magnet
    kind: str  # hub | folder | tiny


def known_names() -> list[str]:
    return [*TINY, *SHORT_NAMES]


def may_have_melody(name: str) -> bool:
    """False for names known to lack chroma conditioning (folders and hub ids: checked on load)."""
    if name in TINY or name in SHORT_NAMES:
        return name in MELODY_MODELS
    return not name.startswith(("facebook/musicgen-", "facebook/audiogen", "facebook/magnet")) \
        or "melody" in name


def acr_home() -> Path:
    """User cache folder of acr (tiny models, ...): $ACR_HOME, else $XDG_CACHE_HOME/acr."""
    if os.environ.get("ACR_HOME"):
        return Path(os.environ["ACR_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "acr"


def tiny_model_dir(name: str) -> Path:
    return acr_home() / "models" / f"{name}-v{TINY_VERSION}"


def resolve_model(name: str) -> ModelSpec:
    """What `name` refers to; UsageError (listing the known names) when it is nothing."""
    if name in TINY:
        return ModelSpec(name, str(tiny_model_dir(name)), TINY[name][0], "tiny")
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
    raise UsageError(f"unknown model {name!r}; known models: {', '.join(known_names())} "
                     "(or a Hugging Face id, or a local model folder)")


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


def import_audiocraft() -> Any:
    """Import audiocraft quietly (xformers' harmless C++-extension warning) with torch attention."""
    import logging
    import warnings

    logging.getLogger("xformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
    import audiocraft.models
    from audiocraft.modules.transformer import set_efficient_attention_backend

    set_efficient_attention_backend("torch")
    return audiocraft.models


def load_model(name: str, device: str = "auto") -> LoadedModel:
    """Resolve and load a model (once per process and device)."""
    spec = resolve_model(name)
    device = resolve_device(device)
    key = (spec.source, device)
    if key not in _LOADED:
        _LOADED[key] = _load(spec, device)
    return _LOADED[key]


def load_for_training(name: str, device: str = "auto") -> LoadedModel:
    """A fresh (uncached) copy to train: the LM in float32 on `device` (AudioCraft loads fp16
    weights on GPUs; training keeps fp32 master weights and autocasts instead)."""
    loaded = _load(resolve_model(name), resolve_device(device))
    loaded.model.lm.float()
    return loaded


def _load(spec: ModelSpec, device: str) -> LoadedModel:
    models = import_audiocraft()
    if spec.kind == "tiny":
        ensure_tiny_model(spec.name)
    try:
        # the files audiocraft's loaders will read, read safely first (a file that would run
        # code, or is no checkpoint, is refused before audiocraft touches it)
        lm_pkg, _ = release_checkpoints(spec, mmap=True)
        family = spec.family or _family(lm_pkg)
        del lm_pkg
        cls = {"musicgen": models.MusicGen, "audiogen": models.AudioGen,
               "magnet": models.MAGNeT}[family]
        model = cls.get_pretrained(spec.source, device=device)
    except ModuleNotFoundError as exc:
        if exc.name == "demucs":  # melody models split stems with demucs (not in the tested set)
            raise UsageError(f"model {spec.name!r} needs the demucs package for its melody "
                             "conditioning: pip install demucs (its htdemucs weights download "
                             "on first use)") from exc
        raise
    except UsageError:
        raise
    except Exception as exc:
        if spec.kind == "hub" and _is_fetch_error(exc):
            raise UsageError(_offline_message(spec)) from exc
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


def _offline_message(spec: ModelSpec) -> str:
    """Which files are missing from the local Hugging Face cache, and how to get them."""
    from huggingface_hub import try_to_load_from_cache

    wanted = [(spec.source, f) for f in RELEASE_FILES]
    if spec.family in ("musicgen", "magnet") or spec.family == "audiogen":
        wanted.append(("t5-base", "config.json"))  # the text encoder of every released model
    missing = [f"{repo}/{f}" for repo, f in wanted
               if not isinstance(try_to_load_from_cache(repo, f), str)]
    missing_text = ", ".join(missing) if missing else "(files present but unreadable)"
    return (f"model {spec.name!r} ({spec.source}): cannot download it from the Hugging Face hub "
            f"(offline?) and the local cache lacks: {missing_text}. On a connected machine run "
            f"`hf download {spec.source}` and `hf download t5-base`, copy the cache "
            "(~/.cache/huggingface, or $HF_HOME) here, and set HF_HUB_OFFLINE=1")


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
    """Build `name` into $ACR_HOME/models/ once (deterministic weights), return its folder."""
    folder = tiny_model_dir(name)
    if all((folder / f).is_file() for f in RELEASE_FILES):
        return folder
    import torch
    from omegaconf import OmegaConf

    builders = import_audiocraft().builders
    cfg = tiny_model_config(name)
    omega = OmegaConf.create(cfg)
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(1234)
        compression = builders.get_compression_model(omega)
        lm = builders.get_lm_model(omega)
    finally:
        torch.random.set_rng_state(rng_state)
    write_release_folder(folder, cfg, lm.state_dict(), compression.state_dict())
    return folder
