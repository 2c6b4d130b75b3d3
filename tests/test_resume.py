"""`--resume` with flags (issue 11 #8): what cannot change the results is applied (the device;
`acr finetune --epochs N` extends a run), anything else is refused with exit code 2 naming the
key, and nothing in the run folder changes then."""
import csv
import json
import shutil

import pytest
import torch
import yaml

FINETUNE = """\
name: ft
model: tiny-musicgen
data: {data}
strategy: full
epochs: 2
lr: 3.0e-3
segment_duration: 2.0
sample_every: 0
device: auto
"""
GRID = """\
name: grid
model: tiny-musicgen
device: auto
seed: 5
samples_per_prompt: 1
batch_size: 2
defaults: {duration: 0.5}
prompt_sets:
  calm: [soft piano, quiet strings]
parameter_sets:
  base: {}
  hot: {temperature: 1.5}
analyze: false
"""


def files(run):
    return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def events(run):
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def history(run):
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A finished 2-epoch fine-tune of the tiny model (device: auto), copied per test."""
    from typer.testing import CliRunner

    from acr.cli import app
    from acr.commands.finetune import data

    folder = tmp_path_factory.mktemp("resume")
    data.make_demo_data(folder / "demo", files_per_class=2, seconds=2.0)
    (folder / "ft.yaml").write_text(FINETUNE.format(data=folder / "demo"))
    result = CliRunner().invoke(app, ["finetune", str(folder / "ft.yaml"), "--out",
                                      str(folder / "R")])
    assert result.exit_code == 0, result.stderr
    return folder / "R"


@pytest.fixture
def run(finetuned, tmp_path):
    shutil.copytree(finetuned, tmp_path / "R")
    return tmp_path / "R"


@pytest.mark.slow
def test_finetune_epochs_extends_a_finished_run(acr, run):
    before = history(run)
    weights = torch.load(run / "checkpoints/last.pt", weights_only=True)["weights"]
    result = acr("finetune", "--resume", run, "--epochs", "3", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    rows = history(run)
    columns = ["epoch", "train_loss", "valid_loss", "lr"]
    assert len(rows) == 3
    assert [[r[c] for c in columns] for r in rows[:2]] == [[r[c] for c in columns]
                                                           for r in before]
    trained = torch.load(run / "checkpoints/last.pt", weights_only=True)["weights"]
    assert not all(torch.equal(weights[k], trained[k]) for k in weights)  # epoch 3 trained
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["epochs"] == 3 and recorded["device"] == "cpu"
    resumed = [e for e in events(run) if e["event"] == "run.resume"]
    assert resumed[-1]["changed"] == {"device": ["auto", "cpu"], "epochs": [2, 3]}
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["epochs_run"] == 3 and meta["device"] == "cpu"
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 3
    assert "epoch 3/3" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--set", "lr=0.1"], "  lr: run has 0.003, config has 0.1"),
    (["--set", "batch_size=2"], '  batch_size: run has "auto", config has 2'),
    (["--set", "strategy=lora"], '  strategy: run has "full", config has "lora"'),
    (["--epochs", "1"], "--epochs 1: {run} has already trained 2 epochs; give 2 or more"),
    (["--set", "temperature=1"], "--set temperature=1: temperature: unknown key"),
])
def test_finetune_resume_refuses_what_would_change_the_results(acr, run, args, message):
    before = files(run)
    result = acr("finetune", "--resume", run, *args)
    assert result.exit_code == 2, result.stderr
    assert message.format(run=run) in result.stderr
    assert files(run) == before


@pytest.mark.slow
def test_finetune_resume_accepts_the_batch_size_it_used(acr, run):
    assert json.loads((run / "meta.json").read_text())["batch_size"] == 4
    result = acr("finetune", "--resume", run, "--set", "batch_size=4")
    assert result.exit_code == 0, result.stderr
    assert len(history(run)) == 2  # finished: nothing more to train


@pytest.mark.slow
def test_finetune_epochs_cannot_extend_a_run_that_stopped_early(acr, run):
    last = run / "checkpoints/last.pt"
    saved = torch.load(last, weights_only=True)
    saved["state"]["bad_epochs"] = 3  # patience (3) ran out
    torch.save(saved, last)
    before = files(run)
    result = acr("finetune", "--resume", run, "--epochs", "5")
    assert result.exit_code == 2
    assert f"--epochs 5: {run} stopped early after epoch 2" in result.stderr
    assert files(run) == before


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory):
    from typer.testing import CliRunner

    from acr.cli import app

    folder = tmp_path_factory.mktemp("exp")
    (folder / "grid.yaml").write_text(GRID)
    result = CliRunner().invoke(app, ["experiment", str(folder / "grid.yaml"), "--out",
                                      str(folder / "R")])
    assert result.exit_code == 0, result.stderr
    return folder / "R"


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "3"], "  batch_size: run has 2, config has 3"),
    (["--set", "defaults.temperature=2"], "  defaults.temperature: run has 1.0, config has 2"),
    (["--set", "parameter_sets.hot.temperature=1.6"],
     "  parameter_sets.hot.temperature: run has 1.5, config has 1.6"),
    (["--set", "prompt_sets.calm=[loud drums, quiet strings]"],
     '  prompt_sets.calm: run has ["soft piano", "quiet strings"], config has '
     '["loud drums", "quiet strings"]'),
])
def test_experiment_resume_refuses_what_would_change_the_samples(acr, experiment_run, tmp_path,
                                                                 args, message):
    run = tmp_path / "R"
    shutil.copytree(experiment_run, run)
    before = files(run)
    result = acr("experiment", "--resume", run, *args)
    assert result.exit_code == 2, result.stderr
    assert "a resumed run may change only device" in result.stderr
    assert message in result.stderr
    assert files(run) == before


def test_experiment_resume_applies_the_device(acr, experiment_run, tmp_path):
    run = tmp_path / "R"
    shutil.copytree(experiment_run, run)
    (run / "samples/tiny-musicgen/hot/calm/1-0.wav").unlink()  # one sample left to do
    # as if the run had started on a GPU machine and its folder had been moved here
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "device": "cuda"}, sort_keys=False))
    result = acr("experiment", "--resume", run, "--device", "cpu", "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    assert (run / "samples/tiny-musicgen/hot/calm/1-0.wav").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["device"] == "cpu"
    assert [e["changed"] for e in events(run) if e["event"] == "run.resume"] == [
        {"device": ["cuda", "cpu"]}]
    assert json.loads((run / "meta.json").read_text())["device"] == "cpu"
