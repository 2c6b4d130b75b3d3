"""What a fine-tune leaves beside its checkpoints: samples generated during training, the model
folder (adapters merged, AudioCraft's release layout), history.csv and the loss plot."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch
from torch import nn

from acr.commands.finetune.checkpoints import dropout_generators
from acr.core.config.loader import to_dict
from acr.core.config.schema import FinetuneConfig, GenerationParams
from acr.core.engine import generate_batch, resolve_params, slug, write_sample
from acr.core.models import release_checkpoints
from acr.core.plotting import pyplot, save_figure

HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "lr", "tokens_per_s", "seconds"]


def write_samples(loaded, prompts: list[str], cfg: FinetuneConfig, folder: Path) -> None:
    """Generate the fixed prompts with a fixed seed, without disturbing the training RNG."""
    params = resolve_params(GenerationParams(duration=cfg.sample_duration), loaded)
    loaded.model.lm.eval()  # the caller puts it back in train mode
    with torch.random.fork_rng(devices=[]):
        state = [g.get_state() for g in dropout_generators(loaded.model.lm)]
        wav = generate_batch(loaded, prompts, params, cfg.seed)
        for g, saved in zip(dropout_generators(loaded.model.lm), state):
            g.set_state(saved)
    for index, (prompt, clip) in enumerate(zip(prompts, wav)):
        name = f"{index}-{slug(prompt)}"
        write_sample(folder / f"{name}.wav", clip, loaded.sample_rate,
                     {"id": name, "prompt": prompt, "seed": cfg.seed,
                      "parameters": to_dict(params)})


def export_model(loaded, lm: nn.Module, folder: Path) -> None:
    """The fine-tuned LM (adapters merged) in AudioCraft's release layout, beside the base
    model's compression checkpoint; tensors keep the base checkpoint's dtypes."""
    import shutil
    import tempfile

    base, compression = release_checkpoints(loaded.spec)
    dtypes = {k: v.dtype for k, v in base["best_state"].items() if torch.is_tensor(v)}
    state = {k: v.detach().to("cpu", dtypes.get(k, v.dtype)) for k, v in lm.state_dict().items()}
    missing = set(base["best_state"]) - set(state)
    if missing:
        raise RuntimeError(f"export: the fine-tuned LM lacks {sorted(missing)[:3]}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.parent))
    try:
        torch.save({**base, "best_state": state}, tmp / "state_dict.bin")
        torch.save(compression, tmp / "compression_state_dict.bin")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                         for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def plot_history(history: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    if any(math.isfinite(r["valid_loss"]) for r in history):
        ax.plot(epochs, [r["valid_loss"] for r in history], marker="o", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (mean over codebooks)")
    ax.legend()
    ax.set_title("fine-tuning loss", fontsize=9)
    save_figure(fig, path)
