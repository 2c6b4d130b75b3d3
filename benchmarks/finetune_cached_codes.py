"""Training from cached codes vs re-encoding the audio at every step, same epochs, one process.

The dataset is `acr finetune --make-demo-data` (18 clips of 6 s, 44.1 kHz stereo); the model is
tiny-musicgen on the CPU, full fine-tuning, 2 s segments. acr encodes every segment once (the
first epoch pays for it) and then trains from the codes; the simple trainer reads, resamples and
encodes the audio of every batch again. Prints seconds per epoch for both and the ratio over the
epochs after the first; exits 1 if it is under 2x.

    python benchmarks/finetune_cached_codes.py [--epochs 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-ratio", type=float, default=2.0)
    args = parser.parse_args()

    import torch

    from acr.core.audio import load_resampled
    from acr.commands.finetune import adapters, codes, data
    from acr.commands.finetune.checkpoints import seed_everything
    from acr.commands.finetune.loss import Predict, batch_loss
    from acr.commands.finetune.train import train_epoch
    from acr.core.config.loader import flag_item, load_config
    from acr.core.config.schema import FinetuneConfig
    from acr.core.distributed import Dist
    from acr.core.models import load_for_training

    seconds = 2.0
    with tempfile.TemporaryDirectory() as tmp:
        data.make_demo_data(Path(tmp) / "demo")
        files = data.scan(Path(tmp) / "demo").files
        cfg = load_config(FinetuneConfig, None, [
            ("name", flag_item("bench", "-")), ("data", flag_item(tmp, "-")),
            ("strategy", flag_item("full", "-")), ("grad_clip", flag_item(1.0, "-"))])

        def setup():
            loaded = load_for_training("tiny-musicgen", "cpu")
            seed_everything(loaded.model.lm, 1)
            groups = adapters.trainable_groups(loaded.model.lm, cfg)
            optimizer = torch.optim.AdamW([p for g in groups for p in g.params], lr=1e-3)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            loaded.model.lm.train()
            return loaded, Predict(loaded.model.lm), optimizer, scheduler

        # acr: encode once (in the first epoch's time), then train from the codes
        loaded, model, optimizer, scheduler = setup()
        cached_times = []
        for epoch in range(args.epochs):
            start = time.perf_counter()
            if epoch == 0:
                cache, _ = codes.cached_codes(loaded, files, seconds, Path(tmp) / "codes")
                items = [item for f in files for item in cache[f.rel]]
            train_epoch(model, loaded.model.lm, items, optimizer, scheduler, None, nullcontext,
                        cfg, 4, epoch, "cpu", Dist())
            cached_times.append(time.perf_counter() - start)

        # a simple trainer: every batch reads, resamples and encodes its audio again
        loaded, model, optimizer, scheduler = setup()
        segments = [(f, s) for f in files for s in data.segments_of(f, seconds)]
        length = int(seconds * loaded.sample_rate)
        naive_times = []
        for epoch in range(args.epochs):
            start = time.perf_counter()
            for first in range(0, len(segments) - 3, 4):
                batch = []
                for file, segment in segments[first:first + 4]:
                    wav = load_resampled(file.path, loaded.sample_rate, loaded.channels)
                    begin = int(segment.start * loaded.sample_rate)
                    piece = torch.nn.functional.pad(wav[:, begin:begin + length],
                                                    (0, max(0, length - wav[:, begin:].shape[-1])))
                    with torch.no_grad():
                        encoded, _ = loaded.model.compression_model.encode(piece[None])
                    batch.append(codes.Item(encoded[0].long(), encoded.shape[-1], file.caption))
                optimizer.zero_grad()
                loss, _ = batch_loss(model, batch, "cpu", nullcontext)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            naive_times.append(time.perf_counter() - start)

    print(f"{len(segments)} segments of {seconds:g} s, tiny-musicgen, full fine-tune, CPU")
    print("epoch  cached codes (s)  re-encoding (s)")
    for epoch, (a, b) in enumerate(zip(cached_times, naive_times), 1):
        print(f"{epoch:5d}  {a:16.2f}  {b:15.2f}")
    later_cached = sum(cached_times[1:]) / max(1, len(cached_times) - 1)
    later_naive = sum(naive_times[1:]) / max(1, len(naive_times) - 1)
    ratio = later_naive / later_cached
    print(f"ratio after the first epoch: cached codes are {ratio:.2f}x faster per epoch")
    if ratio < args.min_ratio:
        raise SystemExit(f"below the promised {args.min_ratio}x")


if __name__ == "__main__":
    main()
