"""`acr finetune`: dataset, loss, strategies, a real tiny run, resume, export, DDP."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from acr.core.config.loader import load_config
from acr.core.config.schema import FinetuneConfig
from acr.core.errors import UsageError
from acr.commands.finetune import adapters, data
from acr.commands.finetune.loss import Predict, codebook_cross_entropy
from helpers import kill_when, plain_audiocraft_generates
from synth import drums, progression, write

CONFIG = """\
name: ft
model: tiny-musicgen
data: demo
strategy: full
epochs: 3
lr: 3.0e-3
segment_duration: 2.0
sample_every: 0
device: cpu
"""


def history(run):
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def config(tmp_path, demo, text=CONFIG):
    path = tmp_path / "ft.yaml"
    path.write_text(text.replace("data: demo", f"data: {demo}"))
    return path


# ---- dataset -----------------------------------------------------------------------------------


def test_captions_from_every_source(tmp_path):
    rate = 16000
    for name in ("a.wav", "b.wav", "c.flac", "d.wav", "e.ogg", "sub/f.wav"):
        write(tmp_path / name, progression([[60, 64, 67]], rate, 1.5), rate, subtype="PCM_16"
              if not name.endswith(".ogg") else "VORBIS")
    (tmp_path / "metadata.csv").write_text('file,description,extra\na.wav,"calm, slow piano",x\n')
    (tmp_path / "b.txt").write_text("a drum loop\n")
    (tmp_path / "c.json").write_text(json.dumps({"description": "guitar riff", "genre": "rock",
                                                 "bpm": 120, "moods": ["happy", "bright"]}))
    (tmp_path / "list.jsonl").write_text('{"path": "d.wav", "description": "synth pad"}\n'
                                         '{"path": "sub/f.wav", "caption": "bells"}\n')
    scanned = data.scan(tmp_path)
    captions = {f.rel: (f.caption, f.caption_source) for f in scanned.files}
    assert captions == {
        "a.wav": ("calm, slow piano", "metadata.csv"), "b.wav": ("a drum loop", "txt"),
        "c.flac": ("guitar riff. genre: rock. bpm: 120. moods: happy, bright", "json sidecar"),
        "d.wav": ("synth pad", "list.jsonl"), "sub/f.wav": ("bells", "list.jsonl")}
    assert scanned.skipped == [("e.ogg", "no caption")]
    assert scanned.files[0].sample_rate == rate


def test_dataset_errors(tmp_path):
    with pytest.raises(UsageError, match="no such folder"):
        data.scan(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no audio files"):
        data.scan(tmp_path / "empty")
    write(tmp_path / "plain/a.wav", np.zeros(1000) + 0.1, 16000)
    with pytest.raises(UsageError, match="none of the 1 audio files has a caption"):
        data.scan(tmp_path / "plain")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/a.wav").write_bytes(b"junk")
    (tmp_path / "broken/a.txt").write_text("x")
    with pytest.raises(UsageError, match="no usable audio: 1 file.*a.wav: unreadable"):
        data.scan(tmp_path / "broken")
    (tmp_path / "badcsv").mkdir()
    write(tmp_path / "badcsv/a.wav", np.zeros(1000) + 0.1, 16000)
    (tmp_path / "badcsv/metadata.csv").write_text("name,text\na.wav,x\n")
    with pytest.raises(UsageError, match="metadata.csv:1: header needs a file column"):
        data.scan(tmp_path / "badcsv")


def test_segments_and_split():
    def file(rel, seconds):
        return data.AudioFile(Path(rel), rel, "c", "txt", seconds, 44100, 2)

    assert [(s.start, s.seconds) for s in data.segments_of(file("a", 5.5), 2.0)] == [
        (0.0, 2.0), (2.0, 2.0), (4.0, 1.5)]
    assert [(s.start, s.seconds) for s in data.segments_of(file("b", 4.3), 2.0)] == [
        (0.0, 2.0), (2.0, 2.0)]  # a 0.3 s tail is dropped
    assert [(s.start, s.seconds) for s in data.segments_of(file("c", 0.4), 2.0)] == [(0.0, 0.4)]
    files = [file(f"f{i}", 3) for i in range(10)]
    train, valid = data.split(files, 0.1, seed=1)
    assert len(valid) == 1 and len(train) == 9 and data.split(files, 0.1, 1) == (train, valid)
    assert data.split(files[:2], 0.1, 1)[1] != [] and data.split(files[:1], 0.5, 1)[1] == []
    assert data.split(files, 0.1, seed=2)[1] != valid or len(files) == 1


# ---- loss and strategies ---------------------------------------------------------------------


def test_loss_equals_audiocraft_solver_on_tiny_model_logits():
    from audiocraft.solvers.musicgen import MusicGenSolver

    from acr.core.models import load_for_training

    lm = load_for_training("tiny-musicgen", "cpu").model.lm.eval()
    codes = torch.randint(0, 256, (2, 4, 30))
    logits, mask = Predict(lm)(codes, ["calm piano", "drums"])
    mask = mask & (torch.arange(30) < torch.tensor([[30], [18]]))[:, None, :]
    ours, per_ours = codebook_cross_entropy(logits, codes, mask)
    theirs, per_theirs = MusicGenSolver._compute_cross_entropy(None, logits, codes, mask)
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, b) for a, b in zip(per_ours, per_theirs))


def test_lora_covers_fused_qkv_and_merges_exactly():
    from acr.core.models import load_for_training

    cfg = load_config(FinetuneConfig, None, [("name", _item("x")), ("data", _item("d"))])
    lm = load_for_training("tiny-musicgen", "cpu").model.lm.eval()
    groups = adapters.trainable_groups(lm, cfg)
    names = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert any("in_proj_weight.0.A" in n for n in names) and all(
        n.endswith((".A", ".B")) for n in names)
    with torch.no_grad():
        for p in groups[0].params:
            p.add_(torch.randn_like(p) * 0.05)  # non-zero updates
    codes = torch.randint(0, 256, (1, 4, 20))
    before, _ = Predict(lm)(codes, ["x"])
    assert adapters.merge_lora(lm) == 12  # 2 layers x (self + cross q/k/v and out, 2 FFN)
    after, _ = Predict(lm)(codes, ["x"])
    assert torch.allclose(before, after, atol=1e-5, equal_nan=True)  # NaN: invalid pattern steps
    assert not any(".A" in n for n in lm.state_dict())


def _item(value):
    from acr.core.config.loader import flag_item

    return flag_item(value, "--test")


@pytest.mark.parametrize("strategy, expected", [("full", "all"), ("last_layers", "top"),
                                                ("progressive", "stages")])
def test_strategies_choose_what_trains(strategy, expected):
    from acr.core.models import load_for_training

    cfg = load_config(FinetuneConfig, None, [("name", _item("x")), ("data", _item("d")),
                                             ("strategy", _item(strategy)),
                                             ("n_layers", _item(1))])
    lm = load_for_training("tiny-musicgen", "cpu").model.lm
    groups = adapters.trainable_groups(lm, cfg)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    if expected == "all":
        assert trainable == {n for n, _ in lm.named_parameters()}
    elif expected == "top":
        assert any(n.startswith("transformer.layers.1.") for n in trainable)
        assert not any(n.startswith("transformer.layers.0.") for n in trainable)
        assert any(n.startswith("linears.") for n in trainable) and "emb.0.weight" not in trainable
    else:
        # 3 stages over 2 layers: top layer + heads, then layer 0, then embeddings + conditioner
        assert [g.stage for g in groups] == [0, 1, 2]
        assert [g.lr_factor for g in groups] == [1.0, 0.5, 0.25]
        assert any(p is lm.emb[0].weight for p in groups[2].params)
        assert not any(n.startswith("transformer.layers.0.") for n in trainable)
        adapters.set_stage(groups, adapters.stage_at(9, 10, 3))
        assert all(p.requires_grad for p in lm.parameters())
    assert [adapters.stage_at(e, 9, 3) for e in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


# ---- a real run --------------------------------------------------------------------------------


@pytest.mark.slow
def test_finetune_lowers_valid_loss_and_exports_a_loadable_model(acr, in_tmp, demo):
    assert sf.info(str(next(demo.glob("*.wav")))).samplerate == 44100
    assert sf.info(str(next(demo.glob("*.wav")))).channels == 2
    path = config(in_tmp, demo, CONFIG.replace("sample_every: 0", "sample_every: 3\n"
                                               "sample_duration: 1.0"))
    result = acr("finetune", path, "--out", "R")
    assert result.exit_code == 0, result.stderr
    assert "dataset: 9 files" in result.stderr and "captions: 9 from metadata.csv" in result.stderr
    run = in_tmp / "R"
    rows = history(run)
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "lr", "tokens_per_s",
                             "seconds"]
    assert len(rows) == 3 and float(rows[-1]["valid_loss"]) < float(rows[0]["valid_loss"])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert (run / "plots/loss.png").is_file()
    assert len(list((run / "samples/epoch-003").glob("*.wav"))) == 3
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["batch_size"] == 4
    # the loop's wall time: the epochs (their own seconds) and the samples between them
    assert sum(float(r["seconds"]) for r in rows) < meta["wall_seconds"] < 600
    assert plain_audiocraft_generates(run / "model") == "(1, 1, 32000) 32000"
    assert acr("generate", "--model", run / "model", "-p", "x", "--duration", "0.5",
               "--out", "G").exit_code == 0


def test_codes_are_cached_across_runs(acr, in_tmp, demo):
    path = config(in_tmp, demo, CONFIG.replace("epochs: 3", "epochs: 1"))
    for out in ("A", "B"):
        assert acr("finetune", path, "--out", out).exit_code == 0
    events = [json.loads(l) for l in (in_tmp / "B/events.jsonl").read_text().splitlines()]
    ready = next(e for e in events if e["event"] == "codes.ready")
    assert ready["encoded"] == 0 and ready["cached"] == 9


@pytest.mark.slow
def test_killed_and_resumed_gives_the_same_history(acr, in_tmp, demo):
    text = CONFIG.replace("strategy: full", "strategy: lora").replace("epochs: 3", "epochs: 4")
    path = config(in_tmp, demo, text)
    assert acr("finetune", path, "--out", "full").exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "acr", "finetune", str(path), "--out",
                             str(in_tmp / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    events = in_tmp / "killed/events.jsonl"
    kill_when(proc, lambda: events.is_file() and '"epoch": 2' in events.read_text())
    assert len(history(in_tmp / "killed")) in (2, 3)
    result = acr("finetune", "--resume", in_tmp / "killed")
    assert result.exit_code == 0, result.stderr
    columns = ["epoch", "train_loss", "valid_loss", "lr"]
    assert [[r[c] for c in columns] for r in history(in_tmp / "killed")] == \
        [[r[c] for c in columns] for r in history(in_tmp / "full")]
    meta = json.loads((in_tmp / "killed/meta.json").read_text())
    assert meta["status"] == "completed" and len(meta["resumed"]) == 1


PROGRESSIVE = CONFIG.replace("strategy: full", "strategy: progressive\n"
                             "progressive: {stages: 2}\nwarmup_ratio: 0.99\npatience: 0") \
    .replace("epochs: 3", "epochs: 2").replace("lr: 3.0e-3", "lr: 0.3")


@pytest.mark.slow
def test_progressive_writes_the_best_epochs_whole_model_and_reports_its_stages(acr, in_tmp,
                                                                                demo):
    """The learning rate rises to 0.3 through epoch 2, so epoch 1 (stage 1) is the best and
    epoch 2 (stage 2, layer 0 unfrozen) spoils it: the written model must be epoch 1's whole
    model, with epoch 1's validation loss."""
    from contextlib import nullcontext

    from acr.commands.finetune import codes as code_cache
    from acr.commands.finetune.train import evaluate
    from acr.core.distributed import Dist
    from acr.core.models import acr_home, load_for_training

    result = acr("finetune", config(in_tmp, demo, PROGRESSIVE), "--out", "R")
    assert result.exit_code == 0, result.stderr
    rows = history(in_tmp / "R")
    assert float(rows[1]["valid_loss"]) > float(rows[0]["valid_loss"])  # epoch 1 is the best
    loaded = load_for_training(str(in_tmp / "R/model"), "cpu")
    _, valid_files = data.split(data.scan(demo).files, 0.1, 1)
    cache, encoded = code_cache.cached_codes(loaded, valid_files, 2.0,
                                             acr_home() / "cache" / "codes")
    assert encoded == 0  # the codes the run validated on
    items = [item for f in valid_files for item in cache[f.rel]]
    batch_size = json.loads((in_tmp / "R/meta.json").read_text())["batch_size"]
    loss = evaluate(Predict(loaded.model.lm), loaded.model.lm, items, batch_size, "cpu",
                    nullcontext, Dist())
    assert loss == pytest.approx(float(rows[0]["valid_loss"]), rel=1e-5)
    # the stages as they start (issue 17 #20), and the first count right
    text = " ".join(result.stderr.split())
    assert "progressive: 131,584 of 283,840 parameters train in the first of 2 stages " \
        "(283,840 by the last)" in text
    assert "stage 1/2 from epoch 1: trains layer 1, output heads, out_norm (lr x1); 131,584 " \
        "of 283,840 parameters train" in text
    assert "stage 2/2 from epoch 2: unfreezes layer 0, embeddings, conditioner, fuser " \
        "(lr x0.5); 283,840 of 283,840 parameters train" in text
    events = [json.loads(line) for line in (in_tmp / "R/events.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["epoch"], e["trainable_parameters"]) for e in events
            if e["event"] == "stage.start"] == [(1, 1, 131584), (2, 2, 283840)]


@pytest.mark.slow
def test_shipped_finetune_tiny_config_runs_as_the_readme_says(acr, tmp_path, monkeypatch):
    """configs/finetune-tiny.yaml unchanged, from a checkout-like folder, on the demo data made
    where the config expects it (a smaller set than the command's default)."""
    from helpers import ROOT

    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs/finetune-tiny.yaml", tmp_path / "configs")
    data.make_demo_data(tmp_path / "experiments/finetune-demo-data", files_per_class=2,
                        seconds=2.0)
    monkeypatch.chdir(tmp_path)
    result = acr("finetune", "configs/finetune-tiny.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "R"
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    assert len(history(run)) == 5  # the config's epochs (patience 3 may not stop it earlier)
    assert len(list((run / "samples/epoch-005").glob("*.wav"))) == 3
    assert sf.info(str(next((run / "samples/epoch-005").glob("*.wav")))).duration == 2.0
    assert {p.name for p in (run / "model").iterdir()} == {"state_dict.bin",
                                                           "compression_state_dict.bin"}


@pytest.mark.slow
def test_shipped_musicgen_small_lora_config_runs_on_the_tiny_model(acr, in_tmp, demo):
    """configs/finetune-musicgen-small-lora.yaml with only the model, the data, the device and
    the sizes swapped: rank-16 LoRA on every target, merged into a plain AudioCraft model."""
    from helpers import ROOT

    result = acr("finetune", ROOT / "configs/finetune-musicgen-small-lora.yaml",
                 "--set", "model=tiny-musicgen", "--set", f"data={demo}",
                 "--set", "device=cpu", "--set", "epochs=1", "--set", "segment_duration=2.0",
                 "--set", "sample_every=1", "--set", "sample_duration=0.5", "--out", "R")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert (recorded["strategy"], recorded["lora"]["rank"], recorded["grad_accum"]) == \
        ("lora", 16, 4)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["merged_adapters"] == 12
    assert len(list((run / "samples/epoch-001").glob("*.wav"))) == 3
    state = torch.load(run / "model/state_dict.bin", weights_only=True)["best_state"]
    assert not any(".A" in k or "parametrizations" in k for k in state)  # merged, plain


def test_corrupt_file_among_good_ones_is_skipped_and_reported(acr, in_tmp, demo):
    import shutil

    folder = in_tmp / "data"
    shutil.copytree(demo, folder)
    (folder / "zz-broken.wav").write_bytes(b"RIFFjunk")
    (folder / "zz-broken.txt").write_text("broken clip")
    path = config(in_tmp, folder, CONFIG.replace("epochs: 3", "epochs: 1"))
    result = acr("finetune", path, "--out", "R")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 file(s): zz-broken.wav (unreadable" in result.stderr


@pytest.mark.parametrize("setup, message", [
    ("missing", "data: {data}: no such folder"),
    ("uncaptioned", "none of the 2 audio files has a caption"),
    ("unreadable", "no usable audio: 2 file(s) skipped"),
])
def test_bad_data_exits_2_with_one_line_and_no_run(acr, in_tmp, setup, message):
    folder = in_tmp / "data"
    if setup != "missing":
        folder.mkdir()
        for name in ("a.wav", "b.wav"):
            if setup == "uncaptioned":
                write(folder / name, drums(120, 1, 16000), 16000)
            else:
                (folder / name).write_bytes(b"not audio")
                (folder / name).with_suffix(".txt").write_text("caption")
    (in_tmp / "ft.yaml").write_text(CONFIG.replace("data: demo", "data: data"))
    result = acr("finetune", "ft.yaml")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(data=folder.resolve()) in lines[0]
    assert not (in_tmp / "experiments").exists()


def test_relative_data_resolves_against_the_config_folder(acr, tmp_path, demo, monkeypatch):
    import shutil

    shutil.copytree(demo, tmp_path / "configs/demo")
    (tmp_path / "configs/ft.yaml").write_text(CONFIG.replace("epochs: 3", "epochs: 1"))
    monkeypatch.chdir(tmp_path)
    result = acr("finetune", "configs/ft.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    import yaml

    recorded = yaml.safe_load((tmp_path / "R/config.yaml").read_text())
    assert recorded["data"] == str((tmp_path / "configs/demo").resolve())
    assert recorded["segment_duration"] == 2.0


def test_make_demo_data(acr, tmp_path):
    result = acr("finetune", "--make-demo-data", tmp_path / "d")
    assert result.exit_code == 0
    with open(tmp_path / "d/metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18 and rows[0]["description"] == "warm piano chords, slow, in C major"
    assert acr("finetune", "--make-demo-data", tmp_path / "d").exit_code == 2  # not empty


@pytest.mark.slow
def test_ddp_two_gloo_ranks(tmp_path, demo):
    """Progressive in two stages: DDP must reduce the gradients of the layers stage 2 unfreezes
    (the run fails if the ranks' weights differ at the end), and it does not search for unused
    parameters (none are), so it does not warn that it found none (issue 17 #16)."""
    path = config(tmp_path, demo, CONFIG.replace("epochs: 3", "epochs: 2").replace(
        "strategy: full", "strategy: progressive\nprogressive: {stages: 2}"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run",
                           "--standalone", "--nproc_per_node", "2",  # (a free port)
                           "-m", "acr", "finetune", str(path), "--out",
                           str(tmp_path / "R")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "find_unused_parameters" not in proc.stderr
    assert "stage 2/2 from epoch 2: unfreezes layer 0" in " ".join(proc.stderr.split())
    rows = history(tmp_path / "R")
    assert len(rows) == 2 and float(rows[1]["valid_loss"]) < float(rows[0]["valid_loss"])
    assert json.loads((tmp_path / "R/meta.json").read_text())["world_size"] == 2
    assert (tmp_path / "R/model/state_dict.bin").is_file()


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_losses(acr, in_tmp, demo, monkeypatch):
    """Recomputing activations in the backward pass changes memory, not the result; and it
    really recomputes: every transformer layer runs twice per training step (forward, and
    again in the backward pass), counted on AudioCraft's own layer class."""
    from audiocraft.modules.transformer import StreamingTransformerLayer

    calls = {"training": 0}
    forward = StreamingTransformerLayer.forward

    def counted(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            calls["training"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(StreamingTransformerLayer, "forward", counted)
    plain = config(in_tmp, demo, CONFIG.replace("epochs: 3", "epochs: 2"))
    assert acr("finetune", plain, "--out", "A").exit_code == 0
    without = calls["training"]
    result = acr("finetune", plain, "--set", "activation_checkpointing=true", "--out", "B")
    assert result.exit_code == 0, result.stderr
    steps = json.loads((in_tmp / "A/meta.json").read_text())["steps_per_epoch"] * 2
    assert without == steps * 2  # 2 epochs' steps x 2 layers of the tiny model
    assert calls["training"] - without == 2 * without
    columns = ["train_loss", "valid_loss"]
    a, b = history(in_tmp / "A"), history(in_tmp / "B")
    assert [float(r[c]) for r in a for c in columns] == pytest.approx(
        [float(r[c]) for r in b for c in columns], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_finetune_on_cuda_with_autocast(acr, in_tmp, demo):
    """bf16 (or fp16 with a gradient scaler) autocast on a GPU; fp32 master weights."""
    path = config(in_tmp, demo, CONFIG.replace("device: cpu", "device: cuda").replace(
        "epochs: 3", "epochs: 2"))
    result = acr("finetune", path, "--out", "R")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((in_tmp / "R/meta.json").read_text())
    assert meta["precision"] in ("bfloat16", "float16") and meta["batch_size"] >= 1
    rows = history(in_tmp / "R")
    assert float(rows[-1]["valid_loss"]) < float(rows[0]["valid_loss"])
    assert plain_audiocraft_generates(in_tmp / "R/model") == "(1, 1, 32000) 32000"
