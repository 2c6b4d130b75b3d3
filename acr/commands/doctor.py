"""`acr doctor`: the environment report a user pastes into a bug report.

Versions, devices and their free memory, which released models fit in that memory (and a
suggested batch size for generating with each), optional components (xformers kernels, ffmpeg,
CLAP weights), the Hugging Face cache and what of it is already downloaded, and whether the hub
can be reached.
"""
from __future__ import annotations

import os
import platform
import shutil

from acr.core.environment import versions
from acr.core.memory import generation_bytes_per_sample
from acr.core.models import (DEFAULT_CLAP, LM_CARD, LM_CODEBOOKS, LM_SCALES, RANDOM, SHORT_NAMES,
                             TINY, acr_home, hub_offline, hub_problem, lm_parameter_count,
                             released_scale, tiny_model_dir)

DOCTOR_PACKAGES = ("audiocraft", "torch", "torchaudio", "xformers", "transformers", "numpy",
                   "librosa", "soundfile")


def _versions() -> dict:
    return {**versions(DOCTOR_PACKAGES), "platform": platform.platform()}


def _memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) system memory from /proc/meminfo (Linux), else (None, None)."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii"))
        return (int(fields["MemTotal"].split()[0]) * 1024,
                int(fields["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return None, None


def _devices() -> list[dict]:
    import torch

    total, available = _memory_bytes()
    devices = [{"device": "cpu", "name": platform.processor() or platform.machine(),
                "cores": os.cpu_count(), "memory_total": total, "memory_free": available,
                "torch_threads": torch.get_num_threads()}]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        free, whole = torch.cuda.mem_get_info(index)
        props = torch.cuda.get_device_properties(index)
        devices.append({"device": f"cuda:{index}", "name": props.name, "memory_total": whole,
                        "memory_free": free, "capability": f"{props.major}.{props.minor}",
                        "bf16": bool(torch.cuda.is_bf16_supported())})
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append({"device": "mps", "name": "Apple MPS"})
    return devices


def model_fit(device: dict, duration: float = 30.0) -> list[dict]:
    """For each released model: weights' memory on `device`, whether it fits, a batch size."""
    free = device.get("memory_free")
    on_gpu = device["device"].startswith("cuda")
    out = []
    for name, (hub_id, family) in SHORT_NAMES.items():
        # the released shapes, from the one place the random models are built from too
        scale = released_scale(name)
        codebooks = 2 * LM_CODEBOOKS if "stereo" in name else LM_CODEBOOKS
        params = lm_parameter_count(scale, "audiogen" if family == "audiogen" else "musicgen",
                                    codebooks) * (1.5 if "melody" in name else 1.0)
        weights = params * (2 if on_gpu else 4) + 0.5e9  # + T5 encoder and EnCodec
        per_sample = generation_bytes_per_sample(LM_SCALES[scale].dim, LM_SCALES[scale].num_layers,
                                                 int(duration * 50), LM_CARD, codebooks)
        usable = 0.9 * free if free is not None else 0.0
        if not on_gpu:
            per_sample = 0  # CPU generation memory is small next to the weights
        fits = free is not None and weights + per_sample <= usable
        batch = (min(64, int((usable - weights) // per_sample)) if on_gpu else 8) if fits else 0
        out.append({"model": name, "hub_id": hub_id, "family": family,
                    "weights_gb": round(weights / 1e9, 1), "fits": bool(fits),
                    "suggested_batch_size": batch})
    return out


def _optional() -> dict:
    import logging

    logging.getLogger("xformers").setLevel(logging.ERROR)  # its "can't load C++" warning
    try:
        from xformers import _cpp_lib

        kernels = _cpp_lib._cpp_library_load_exception is None
    except Exception:  # pragma: no cover - depends on the xformers build
        kernels = False
    return {"xformers_kernels": bool(kernels), "ffmpeg": shutil.which("ffmpeg"),
            "clap_weights": _cached(DEFAULT_CLAP, "config.json")}


def _cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def _hub(check_network: bool) -> dict:
    from huggingface_hub import constants

    downloaded = [name for name, (hub_id, _) in SHORT_NAMES.items()
                  if _cached(hub_id, "state_dict.bin")]
    status: dict = {"cache": str(constants.HF_HUB_CACHE), "downloaded": downloaded,
                    "t5_base": _cached("t5-base", "config.json"),
                    "tiny_models": {n: (tiny_model_dir(n) / "state_dict.bin").is_file()
                                    for n in [*TINY, *RANDOM]}}
    if hub_offline():
        status["reachable"] = None
        status["note"] = "offline mode: HF_HUB_OFFLINE is set"
    elif not check_network:
        status["reachable"] = None
        status["note"] = "--no-network"
    else:
        problem = hub_problem(timeout=5)
        status["reachable"] = problem is None
        if problem:
            status["note"] = problem
    return status


def report(check_network: bool = True) -> dict:
    import torch

    devices = _devices()
    best = max(devices, key=lambda d: (d["device"].startswith("cuda"),
                                       d.get("memory_free") or 0))
    return {
        "versions": _versions(),
        "cuda": {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None},
        "devices": devices,
        "models": {"device": best["device"], "fit": model_fit(best)},
        "optional": _optional(),
        "hub": _hub(check_network),
        "acr_home": str(acr_home()),
    }


def render(data: dict) -> list[str]:
    """The report as plain lines (what `acr doctor` prints)."""
    def gb(value):
        return "-" if value is None else f"{value / 1e9:.1f} GB"

    v = data["versions"]
    lines = [f"acr {v['acr']}, audiocraft {v['audiocraft']}, torch {v['torch']} (CUDA "
             f"{data['cuda']['torch_cuda'] or '-'}), torchaudio {v['torchaudio']}, xformers "
             f"{v['xformers']}, transformers {v['transformers']}, Python {v['python']}",
             f"platform: {v['platform']}", "devices:"]
    for d in data["devices"]:
        extra = f", {d['cores']} cores, {d['torch_threads']} torch threads" if "cores" in d else \
            (f", compute {d['capability']}, bf16 {'yes' if d['bf16'] else 'no'}"
             if "capability" in d else "")
        lines.append(f"  {d['device']}: {d['name']} — {gb(d.get('memory_free'))} free of "
                     f"{gb(d.get('memory_total'))}{extra}")
    lines.append(f"models on {data['models']['device']} (30 s clips):")
    for m in data["models"]["fit"]:
        verdict = f"fits, batch {m['suggested_batch_size']}" if m["fits"] else "does not fit"
        lines.append(f"  {m['model']:28} {m['weights_gb']:5.1f} GB  {verdict}")
    o = data["optional"]
    lines += [f"xformers kernels: {'yes' if o['xformers_kernels'] else 'no (harmless: acr uses torch attention)'}",
              f"ffmpeg: {o['ffmpeg'] or 'not found (not needed by acr)'}",
              f"CLAP weights for analysis ({DEFAULT_CLAP}): {'cached' if o['clap_weights'] else 'not cached'}"]
    h = data["hub"]
    reach = {True: "reachable", False: "NOT reachable", None: "not checked"}[h["reachable"]]
    lines += [f"Hugging Face cache: {h['cache']}",
              f"  downloaded: {', '.join(h['downloaded']) or 'none of the known models'}; "
              f"t5-base: {'yes' if h['t5_base'] else 'no'}",
              f"  hub: {reach}" + (f" ({h['note']})" if h.get("note") else ""),
              f"acr home: {data['acr_home']} (built-in models built: "
              f"{', '.join(n for n, ok in h['tiny_models'].items() if ok) or 'none yet'})"]
    return lines
