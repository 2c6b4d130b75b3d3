"""`acr generate` end to end on the tiny models (real AudioCraft generation on the CPU)."""
import json
import re

import pytest
import soundfile as sf
import yaml

from acr.core import models
from acr.core.audio import integrated_loudness, read_wav
from helpers import run_acr

TINY = ["--model", "tiny-musicgen", "--device", "cpu"]


def test_generate_writes_wavs_sidecars_and_run_records(acr, in_tmp):
    result = acr("generate", *TINY, "--prompt", "calm piano", "--prompt", "fast drums",
                 "--duration", "2", "--seed", "7", "--out", "D")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "D"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "events.jsonl", "meta.json",
                                                    "samples"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "0-calm-piano.json", "0-calm-piano.wav", "1-fast-drums.json", "1-fast-drums.wav"]
    for stem, prompt in (("0-calm-piano", "calm piano"), ("1-fast-drums", "fast drums")):
        info = sf.info(str(run / "samples" / f"{stem}.wav"))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == \
            (32000, 64000, 1, "PCM_16")
        side = json.loads((run / "samples" / f"{stem}.json").read_text())
        assert side["prompt"] == prompt and side["seed"] == 7 and side["model"] == "tiny-musicgen"
        assert side["sample_rate"] == 32000 and side["duration"] == 2.0
        assert side["parameters"]["extend_stride"] == 18.0 and side["normalization"] is None
        assert side["generation_seconds"] > 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 7 and config["device"] == "cpu"
    assert config["params"] == {"duration": 2.0, "use_sampling": True, "top_k": 250,
                                "top_p": 0.0, "temperature": 1.0, "cfg_coef": 3.0,
                                "two_step_cfg": False, "extend_stride": 18.0}
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["command"] == "generate"
    assert meta["seed"] == 7 and meta["device"] == "cpu" and meta["ended"] >= meta["started"]
    assert set(meta["versions"]) >= {"acr", "audiocraft", "torch", "python"}
    assert meta["versions"]["audiocraft"] == "1.3.0"
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[0] == "run.start" and events[-1] == "run.end"
    assert events.count("sample.written") == 2
    assert "samples" in result.stdout and "D" in result.stdout
    # not a terminal: progress comes as plain lines, ending at all 100 token frames (2 s x 50)
    assert "generating: 100/100" in result.stderr.splitlines()


@pytest.mark.slow
def test_same_seed_is_byte_identical_across_processes(tmp_path):
    args = ["generate", *TINY, "--prompt", "calm piano", "--prompt", "fast drums",
            "--duration", "2", "--seed", "7"]
    for out in ("D1", "D2"):
        proc = run_acr(*args, "--out", tmp_path / out)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("0-calm-piano.wav", "1-fast-drums.wav"):
        assert (tmp_path / "D1" / "samples" / name).read_bytes() == \
            (tmp_path / "D2" / "samples" / name).read_bytes()


def test_different_seed_gives_different_audio(acr, in_tmp):
    for seed, out in ((1, "A"), (2, "B")):
        assert acr("generate", *TINY, "-p", "x", "--duration", "1", "--seed", seed,
                   "--out", out).exit_code == 0
    assert (in_tmp / "A/samples/0-x.wav").read_bytes() != (in_tmp / "B/samples/0-x.wav").read_bytes()


def test_random_seed_is_recorded_and_reproduces(acr, in_tmp):
    assert acr("generate", *TINY, "-p", "x", "--duration", "1", "--out", "A").exit_code == 0
    seed = yaml.safe_load((in_tmp / "A/config.yaml").read_text())["seed"]
    assert isinstance(seed, int)
    assert acr("generate", "A/config.yaml", "--out", "B").exit_code == 0  # the resolved config
    assert (in_tmp / "A/samples/0-x.wav").read_bytes() == (in_tmp / "B/samples/0-x.wav").read_bytes()


def test_default_run_folder_layout(acr, in_tmp):
    assert acr("generate", *TINY, "-p", "x", "--duration", "1", "--name", "sweep").exit_code == 0
    [run] = list((in_tmp / "experiments" / "sweep").iterdir())
    assert run.name[:8].isdigit() and run.name[8] == "T" and run.name[15] == "Z"
    assert len(run.name.split("-")[1]) == 6
    assert (run / "samples" / "0-x.wav").is_file()


def test_yaml_with_flags_flags_win(acr, in_tmp):
    (in_tmp / "g.yaml").write_text("model: tiny-audiogen\nprompts: [dog barking, rain]\n"
                                   "seed: 3\ndevice: cpu\nparams: {duration: 3, top_k: 50}\n")
    result = acr("generate", "g.yaml", "--duration", "1.5", "--out", "D")
    assert result.exit_code == 0, result.stderr
    for stem in ("0-dog-barking", "1-rain"):
        info = sf.info(str(in_tmp / "D/samples" / f"{stem}.wav"))
        assert (info.samplerate, info.frames) == (16000, 24000)
        side = json.loads((in_tmp / "D/samples" / f"{stem}.json").read_text())
        assert side["parameters"]["top_k"] == 50 and side["parameters"]["duration"] == 1.5
        assert side["parameters"]["extend_stride"] == 2.0  # AudioGen's default


@pytest.fixture(scope="module")
def short_window_model(tmp_path_factory):
    """A tiny AudioGen folder with a 3 s window, to exercise the sliding-window extension.

    (MusicGen cannot have a window of 18 s or less: its constructor applies the default 18 s
    stride, which must be below the window.)"""
    cfg = models.tiny_model_config("tiny-audiogen")
    cfg["dataset"]["segment_duration"] = 3.0
    source = models.load_model("tiny-audiogen", "cpu").model
    folder = tmp_path_factory.mktemp("models") / "short-window"
    models.write_release_folder(folder, cfg, source.lm.state_dict(),
                                source.compression_model.state_dict())
    return folder


@pytest.mark.slow
def test_duration_beyond_the_window_is_extended(acr, in_tmp, short_window_model):
    result = acr("generate", "--model", short_window_model, "--device", "cpu", "-p", "x",
                 "--duration", "4.5", "--extend-stride", "1", "--seed", "1", "--out", "D")
    assert result.exit_code == 0, result.stderr
    info = sf.info(str(in_tmp / "D/samples/0-x.wav"))
    assert (info.samplerate, info.frames) == (16000, int(4.5 * 50) * 320)  # whole token frames


def test_extend_stride_must_be_below_the_window(acr, in_tmp, short_window_model):
    result = acr("generate", "--model", short_window_model, "--device", "cpu", "-p", "x",
                 "--duration", "4", "--extend-stride", "3", "--out", "D")
    assert result.exit_code == 2
    assert "params.extend_stride: 3 must be below the model's window of 3 s" in result.stderr
    assert not (in_tmp / "D").exists()


def test_loudness_normalisation_is_applied_and_recorded(acr, in_tmp):
    result = acr("generate", *TINY, "-p", "x", "--duration", "2", "--seed", "1",
                 "--loudness-lufs", "-20", "--sample-format", "float32", "--out", "D")
    assert result.exit_code == 0, result.stderr
    side = json.loads((in_tmp / "D/samples/0-x.json").read_text())
    norm = side["normalization"]
    assert norm["applied"] and norm["target_lufs"] == -20.0
    assert norm["gain_db"] == pytest.approx(-20.0 - norm["measured_lufs"], abs=0.5)
    wav, rate = read_wav(in_tmp / "D/samples/0-x.wav")
    assert sf.info(str(in_tmp / "D/samples/0-x.wav")).subtype == "FLOAT"
    assert integrated_loudness(wav, rate) == pytest.approx(-20.0, abs=0.05)


def test_failure_marks_the_run_failed(acr, in_tmp, monkeypatch):
    import acr.commands.generate.run as generate

    def broken(*args, **kwargs):
        raise RuntimeError("device fell over")

    monkeypatch.setattr(generate, "generate_batch", broken)
    result = acr("generate", *TINY, "-p", "x", "--duration", "1", "--out", "D")
    assert result.exit_code == 1
    assert "error: RuntimeError: device fell over" in result.stderr
    meta = json.loads((in_tmp / "D/meta.json").read_text())
    assert meta["status"] == "failed" and "device fell over" in meta["error"]
    assert not (in_tmp / "D/samples").exists()


def test_ctrl_c_marks_the_run_interrupted(acr, in_tmp, monkeypatch):
    import acr.commands.generate.run as generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "generate_batch", interrupted)
    result = acr("generate", *TINY, "-p", "x", "--duration", "1", "--out", "D")
    assert result.exit_code == 130
    assert json.loads((in_tmp / "D/meta.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("model, window, rate, windows", [("tiny-musicgen", 30, 32000, 4),
                                                          ("tiny-audiogen", 10, 16000, 9)])
@pytest.mark.slow
def test_long_form_at_two_and_a_half_windows(acr, in_tmp, model, window, rate, windows):
    """2.5x the model's window by AudioCraft's sliding window, with progress per window."""
    duration = 2.5 * window
    result = acr("generate", "--model", model, "-p", "long piece", "--duration", duration,
                 "--seed", "3", "--out", "D")
    assert result.exit_code == 0, result.stderr
    info = sf.info(str(in_tmp / "D/samples/0-long-piece.wav"))
    assert (info.samplerate, info.frames) == (rate, int(duration * 50) * (rate // 50))
    events = [json.loads(line) for line in (in_tmp / "D/events.jsonl").read_text().splitlines()]
    assert [(e["index"], e["of"]) for e in events if e["event"] == "generate.window"] == \
        [(i, windows) for i in range(1, windows + 1)]
    assert f"window {windows}/{windows}" in result.stderr
    progress = [int(line.split(": ")[1].split("/")[0]) for line in result.stderr.splitlines()
                if line.startswith("generating: ")]
    assert progress == sorted(progress) and progress[-1] == int(duration * 50)
    audio, _ = read_wav(in_tmp / "D/samples/0-long-piece.wav")
    last_window = audio[0, -int(window * rate):]
    assert float(last_window.abs().max()) > 0  # the tail was generated, not padded


@pytest.mark.parametrize("recipe", ["run", "mix"])
def test_any_failure_once_the_run_folder_exists_marks_it_failed(acr, in_tmp, monkeypatch, recipe):
    """Even the first message after the folder is created (stderr closed: `acr ... 2>&1 | head`)
    leaves a `failed` run, never a `running` one; for plain and hybrid generate."""
    import importlib

    module = importlib.import_module(f"acr.commands.generate.{recipe}")

    def closed_stderr(message):
        if message.startswith("run folder:"):
            raise BrokenPipeError("stderr is closed (injected)")

    monkeypatch.setattr(module.console, "info", closed_stderr)
    if recipe == "run":
        args = [*TINY, "-p", "x", "--duration", "0.5"]
    else:
        args = ["--device", "cpu", "--duration", "0.5", "--set",
                "hybrid={music: {model: tiny-musicgen, prompt: a}, "
                "sfx: {model: tiny-audiogen, prompt: b}}"]
    result = acr("generate", *args, "--out", "D")
    assert result.exit_code == 1
    meta = json.loads((in_tmp / "D/meta.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"] == "BrokenPipeError: stderr is closed (injected)"


def test_speed_is_reported_as_times_real_time(acr, in_tmp):
    result = acr("generate", *TINY, "-p", "x", "--duration", "0.5", "--out", "D")
    assert result.exit_code == 0, result.stderr
    [line] = [l for l in result.stderr.splitlines() if l.startswith("1 clip(s), 0.5 s of audio")]
    seconds = json.loads((in_tmp / "D/meta.json").read_text())["generation_seconds"]
    speed = float(re.search(r"\(([0-9.]+)x real time\)$", line).group(1))
    # audio / wall, printed with 2 decimals; meta.json rounds the seconds to 3 decimals
    assert 0.5 / (seconds + 0.0005) - 0.006 <= speed <= 0.5 / (seconds - 0.0005) + 0.006
    assert "real-time factor" not in result.stderr


@pytest.mark.parametrize("name", ["magnet-small-10secs", "facebook/audio-magnet-medium"])
def test_magnet_is_refused_from_its_name_before_any_download(acr, in_tmp, name):
    result = acr("generate", "--model", name, "-p", "x", "--out", "D")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"--model: model: model {name!r} is a MAGNeT model: acr drives MusicGen and AudioGen "
        "only (MAGNeT's parameters differ); use a musicgen-* or audiogen-* model")
    assert not (in_tmp / "D").exists()


def test_magnet_folder_is_refused_from_its_config_before_its_weights_load(acr, in_tmp):
    """A folder whose xp.cfg names MAGNeT's LM: refused from the config alone (the weights
    here are empty: loading them would fail differently)."""
    import torch

    folder = in_tmp / "magnet"
    folder.mkdir()
    for name in models.RELEASE_FILES:
        torch.save({"best_state": {}, "xp.cfg": "lm_model: transformer_lm_magnet\n",
                    "version": "1.3.0", "exported": True}, folder / name)
    result = acr("generate", "--model", folder, "-p", "x", "--out", "D")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"model '{folder}' is a MAGNeT model: acr drives MusicGen and AudioGen only (MAGNeT's "
        "parameters differ); use a musicgen-* or audiogen-* model")
    assert not (in_tmp / "D").exists()
