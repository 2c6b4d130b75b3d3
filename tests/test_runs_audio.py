"""Run folders, atomic writes and audio helpers."""
import json
import os
import stat

import numpy as np
import pytest
import torch

from acr.core import runs
from acr.core.environment import git_commit
from acr.core.audio import count_clipped, integrated_loudness, normalize_loudness, read_wav, write_wav
from acr.core.errors import UsageError


def test_write_atomic_leaves_no_temp_files_and_respects_umask(tmp_path):
    runs.write_json(tmp_path / "a.json", {"x": 1})
    runs.write_json(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~mask


def test_failed_write_keeps_the_old_file(tmp_path):
    runs.write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        runs.write_json(tmp_path / "a.json", {"x": object()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_run_records(tmp_path):
    run = runs.start_run("generate", "n", "a: 1\n", 5, "cpu", "cpu", root=tmp_path, argv=["acr"])
    assert run.dir.parent == tmp_path / "n"
    meta = run.meta()
    assert meta["status"] == "running" and meta["seed"] == 5 and meta["argv"] == ["acr"]
    run.event("x", value=1)
    run.finish("completed")
    assert run.meta()["status"] == "completed" and run.meta()["ended"]
    events = [json.loads(line) for line in (run.dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["run.start", "x", "run.end"]
    assert (run.dir / "config.yaml").read_text() == "a: 1\n"


def test_run_folders_are_unique(tmp_path):
    a = runs.new_run_dir("n", root=tmp_path)
    b = runs.new_run_dir("n", root=tmp_path)
    assert a != b and a.parent == b.parent


def test_out_dir_rules(tmp_path):
    runs.check_out_dir(tmp_path / "new")  # absent: fine
    (tmp_path / "empty").mkdir()
    runs.check_out_dir(tmp_path / "empty")  # empty: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        runs.check_out_dir(tmp_path / "file")


def test_git_commit_inside_and_outside_a_repo(tmp_path):
    """Outside a repository: None. Inside: the commit git made, with -dirty once a tracked file
    changes (an untracked file does not count)."""
    import subprocess

    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=repo, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (repo / "a.txt").write_text("one")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    head = git("log", "-1", "--format=%H").strip()
    assert len(head) == 40
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("new")
    assert git_commit(repo) == head
    (repo / "a.txt").write_text("two")
    assert git_commit(repo) == f"{head}-dirty"


def test_wav_round_trip_and_clipping(tmp_path):
    t = torch.arange(16000) / 16000
    wav = torch.stack([0.5 * torch.sin(2 * np.pi * 440 * t), 1.5 * torch.sin(2 * np.pi * 220 * t)])
    assert count_clipped(wav) > 0
    write_wav(tmp_path / "a.wav", wav, 16000, "float32")
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and torch.equal(back, wav)
    write_wav(tmp_path / "b.wav", wav, 16000, "pcm16")
    back, _ = read_wav(tmp_path / "b.wav")
    assert back.abs().max() <= 1.0 and torch.allclose(back[0], wav[0], atol=1 / 32767)


def test_loudness_of_ebu_reference_sine_and_normalisation():
    """EBU Tech 3341 case 1: a 1 kHz stereo sine at -23 dBFS (peak) reads -23.0 LUFS."""
    rate = 48000
    t = torch.arange(20 * rate) / rate
    sine = 10 ** (-23 / 20) * torch.sin(2 * np.pi * 1000 * t)
    stereo = torch.stack([sine, sine])
    assert integrated_loudness(stereo, rate) == pytest.approx(-23.0, abs=0.1)
    louder, record = normalize_loudness(stereo, rate, -16.0)
    assert record["gain_db"] == pytest.approx(7.0, abs=0.1)
    assert integrated_loudness(louder, rate) == pytest.approx(-16.0, abs=0.05)


def test_loudness_follows_gain_even_when_loud():
    """torchaudio's meter clamps at full scale and reads loud audio too quiet; ours must not."""
    rate = 32000
    t = torch.arange(4 * rate) / rate
    burst = 0.05 * torch.sin(2 * np.pi * 3000 * t) * (t % 1 < 0.3)
    quiet = integrated_loudness(burst[None], rate)
    loud = integrated_loudness(40.0 * burst[None], rate)  # +32 dB, peaks well past full scale
    assert loud - quiet == pytest.approx(20 * np.log10(40.0), abs=0.01)


def test_too_short_clip_is_not_normalised():
    wav = torch.ones(1, 100) * 0.1
    out, record = normalize_loudness(wav, 16000, -14.0)
    assert torch.equal(out, wav) and record["applied"] is False and record["measured_lufs"] is None


def test_json_records_are_strict_json(tmp_path):
    """NaN / inf (an epoch without validation, an undefined metric) are written as null, not as
    the invalid `NaN` json.dumps emits; numpy and torch scalars become plain numbers."""
    runs.write_json(tmp_path / "a.json", {"loss": float("nan"), "v": [np.float32(1.5),
                                                                      float("-inf")],
                                          "t": torch.tensor(2.0), "text": "NaN"})
    strict = json.loads((tmp_path / "a.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert strict == {"loss": None, "v": [1.5, None], "t": 2.0, "text": "NaN"}
    run = runs.Run(tmp_path)
    run.event("epoch.end", valid_loss=float("nan"))
    line = (tmp_path / "events.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: 1 / 0)["valid_loss"] is None


def test_resume_matches_only_the_values_acr_picks_at_run_time():
    """device: auto and a null extend_stride match the run's picks; other values compare as
    given (a changed blend is a difference even when the new one is null)."""
    recorded = {"device": "cpu", "seed": 1, "parameter_sets": {
        "a": {"extend_stride": 18.0, "blend": 0.3, "temperature": 1.0}}}
    given = {"device": "auto", "seed": 1, "parameter_sets": {
        "a": {"extend_stride": None, "blend": None, "temperature": 1.0}}}
    assert runs.config_differences(recorded, runs.as_resolved(given, recorded)) == [
        ("parameter_sets.a.blend", 0.3, None)]
    given["parameter_sets"]["a"]["blend"] = 0.3
    assert runs.config_differences(recorded, runs.as_resolved(given, recorded)) == []
    given["device"] = "cuda"
    assert runs.config_differences(recorded, runs.as_resolved(given, recorded)) == [
        ("device", "cpu", "cuda")]
