"""`acr analyze` end to end: on experiment and generate runs and on plain folders of audio."""
import csv
import json
import shutil

import numpy as np
import pytest

from acr.commands.analyze.features import METRIC_VERSION
from helpers import build_tiny_clap
from synth import drums, progression, sine, write

GRID = """\
name: grid
model: tiny-musicgen
device: cpu
seed: 5
samples_per_prompt: 2
batch_size: 6
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings, slow pad]
  loud: [heavy drums, distorted guitar, brass hits]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
findings: [{title: first look, description: hot sounds harsher}]
analyze: false
"""
COLUMNS = ["path", "model", "parameter_set", "prompt_set", "prompt_index", "sample_index",
           "prompt", "image", "loudness_lufs", "true_peak_dbtp", "plr_db", "lra_lu", "crest_factor_db",
           "clipping_ratio", "silence_ratio", "spectral_centroid_hz", "spectral_bandwidth_hz",
           "spectral_rolloff_hz", "spectral_flatness", "onset_rate_hz", "tempo_bpm",
           "key_strength", "repetition", "coherence", "key", "novelty", "flags"]


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory):
    """A finished 24-clip experiment run of the tiny model (analysed copies are made per test)."""
    from typer.testing import CliRunner

    from acr.cli import app

    folder = tmp_path_factory.mktemp("grid")
    (folder / "grid.yaml").write_text(GRID)
    result = CliRunner().invoke(app, ["experiment", str(folder / "grid.yaml"), "--out",
                                      str(folder / "run")])
    assert result.exit_code == 0, result.stderr
    return folder / "run"


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    """A tiny random CLAP model folder (model, tokenizer, feature extractor)."""
    return build_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture
def run(experiment_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(experiment_run, copy)
    return copy


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_analyze_an_experiment_run(acr, run):
    result = acr("analyze", run, "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    out = run / "analysis"
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == COLUMNS and len(rows) == 24
    row = next(r for r in rows if r["path"] == "samples/tiny-musicgen/hot/loud/2-1.wav")
    assert (row["model"], row["parameter_set"], row["prompt_set"], row["prompt_index"],
            row["sample_index"], row["prompt"]) == ("tiny-musicgen", "hot", "loud", "2", "1",
                                                    "brass hits")
    assert float(row["loudness_lufs"]) < 0 and float(row["spectral_centroid_hz"]) > 0
    assert row["lra_lu"] == ""  # 1 s clips: loudness range needs 3 s, left empty (not 0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analysed"]["settings"] == ["baseline", "hot"]
    assert summary["analysed"]["clips"] == 24 and summary["analysed"]["computed"] == 24
    described = summary["groups"]["hot"]["spectral_centroid_hz"]
    assert described["n"] == 6 and described["ci95"][0] <= described["mean"] <= described["ci95"][1]
    pairs = summary["tests"]["spectral_centroid_hz"]["settings"]["pairs"]
    assert [(p["a"], p["b"], p["n"]) for p in pairs] == [("baseline", "hot", 6)]
    assert summary["tests"]["loudness_lufs"]["prompt_sets"]["groups"] == {"calm": 3, "loud": 3}
    assert summary["sets"]["hot"]["frechet_to"] == "baseline"
    assert summary["sets"]["baseline"]["frechet_distance"] == pytest.approx(0, abs=1e-6)
    assert summary["sets"]["hot"]["diversity"] > 0
    assert summary["model_based"]["status"] == "skipped"
    plots = {p.name for p in (out / "plots").iterdir()}
    assert plots == {"settings.png", "heatmaps.png", "spectrograms.png", "correlations.png"}
    report = (out / "report.md").read_text()
    for heading in ("## Key metrics by setting", "## Differences between settings",
                    "## Set-level metrics", "## Findings", "## Plots"):
        assert heading in report
    assert "**first look**: hot sounds harsher" in report
    assert "![spectrograms](plots/spectrograms.png)" in report
    assert "key metrics" not in result.stdout and "mean ± 95% CI" in result.stderr
    assert "\n24 clips (24 analysed, 0 cached)\n" in result.stderr
    assert "\n24 clips in 2 settings (baseline, hot); baseline: `baseline`. 24 analysed now, 0 " \
           f"from the cache. Metric version {METRIC_VERSION}; written " in report
    assert "\nSamples are averaged per prompt first (prompts are the blocks of the design); " \
           "means come with 95% bootstrap confidence intervals over prompts.\n" in report
    assert "\nWilcoxon signed-rank test over prompts; the difference is listed when significant " \
           "(p < 0.05).\n" in report and "p = <" not in report


@pytest.mark.slow
def test_rerun_analyses_only_changed_clips(acr, run):
    assert acr("analyze", run, "--no-model-metrics").exit_code == 0
    result = acr("analyze", run, "--no-model-metrics")
    assert "24 clips (0 analysed, 24 cached)" in result.stderr
    write(run / "samples/tiny-musicgen/hot/loud/0-0.wav", 0.3 * drums(120, 1.0, 32000), 32000)
    result = acr("analyze", run, "--no-model-metrics")
    assert "24 clips (1 analysed, 23 cached)" in result.stderr
    rows = read_csv(run / "analysis/metrics.csv")
    changed = next(r for r in rows if r["path"].endswith("hot/loud/0-0.wav"))
    assert float(changed["onset_rate_hz"]) > 1


@pytest.mark.slow
def test_model_metrics_are_unavailable_without_weights(acr, run):
    result = acr("analyze", run)
    assert result.exit_code == 0, result.stderr
    model = json.loads((run / "analysis/summary.json").read_text())["model_based"]
    assert model["status"] == "unavailable"
    assert "hf download laion/clap-htsat-unfused" in model["reason"]
    assert "CLAP alignment and FAD: unavailable" in (run / "analysis/report.md").read_text()


@pytest.mark.slow
def test_clap_alignment_and_fad_with_a_tiny_clap(acr, run, tiny_clap):
    import soundfile as sf
    import torch
    import torchaudio.functional as F
    from transformers import ClapModel, ClapProcessor

    result = acr("analyze", run, "--clap-model", tiny_clap)
    assert result.exit_code == 0, result.stderr
    rows = read_csv(run / "analysis/metrics.csv")
    assert list(rows[0]) == COLUMNS[:-1] + ["clap_score", "flags"] and len(rows) == 24
    summary = json.loads((run / "analysis/summary.json").read_text())
    model = summary["model_based"]
    assert (model["status"], model["model"], model["fad_to"]) == ("ok", str(tiny_clap),
                                                                  "baseline")
    assert model["fad"]["baseline"] == pytest.approx(0, abs=1e-6) and model["fad"]["hot"] > 0
    assert summary["groups"]["hot"]["clap_score"]["n"] == 6
    report = (run / "analysis/report.md").read_text()
    assert f"(FAD, `{tiny_clap}`) to baseline; CLAP score: cosine similarity of each clip to " \
           "its prompt.\n\n| setting | FAD | mean CLAP score |\n" in report
    # the score is the cosine of CLAP's own forward pass (transformers' ClapModel.forward)
    reference_model = ClapModel.from_pretrained(tiny_clap).eval()
    processor = ClapProcessor.from_pretrained(tiny_clap)
    for row in rows[:3]:
        audio, rate = sf.read(run / row["path"], dtype="float32", always_2d=True)
        mono = F.resample(torch.from_numpy(audio.mean(axis=1)), rate, 48000).numpy()
        with torch.inference_mode():
            out = reference_model(**processor(text=[row["prompt"]], audio=[mono],
                                              sampling_rate=48000, return_tensors="pt"))
        expected = float((out.text_embeds * out.audio_embeds).sum())
        assert float(row["clap_score"]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_a_failing_model_tier_is_reported_and_the_rest_is_kept(acr, run, tmp_path):
    broken = build_tiny_clap(tmp_path / "broken-clap", extractor_mel_bins=32)  # fails on a clip
    result = acr("analyze", run, "--clap-model", broken)
    assert result.exit_code == 0, result.stderr
    assert "warning: model-based metrics (CLAP, FAD) failed, the rest of the analysis is " \
           "complete: RuntimeError: running_mean should contain 32 elements" in result.stderr
    model = json.loads((run / "analysis/summary.json").read_text())["model_based"]
    assert model["status"] == "failed" and model["reason"].startswith("RuntimeError: ")
    rows = read_csv(run / "analysis/metrics.csv")
    assert list(rows[0]) == COLUMNS and len(rows) == 24
    report = (run / "analysis/report.md").read_text()
    assert "CLAP alignment and FAD: failed (RuntimeError: " in report and "## Plots" in report


@pytest.mark.slow
def test_nan_and_inf_clips_are_flagged_through_every_stage(acr, run, tiny_clap):
    """Features, set metrics, plots, report and CLAP all take clips holding NaN or inf."""
    for name, bad in (("hot/loud/0-0.wav", np.nan), ("baseline/calm/1-1.wav", np.inf)):
        audio = 0.3 * drums(120, 1.0, 32000)
        audio[1000:1400] = bad
        write(run / "samples/tiny-musicgen" / name, audio, 32000)
    result = acr("analyze", run, "--clap-model", tiny_clap)
    assert result.exit_code == 0, result.stderr
    assert "2 clip(s) flagged nan: samples/tiny-musicgen/baseline/calm/1-1.wav, " \
           "samples/tiny-musicgen/hot/loud/0-0.wav" in result.stderr
    rows = {r["path"]: r for r in read_csv(run / "analysis/metrics.csv")}
    bad = rows["samples/tiny-musicgen/hot/loud/0-0.wav"]
    assert bad["flags"].split()[0] == "nan"
    assert float(bad["loudness_lufs"]) < 0 and float(bad["onset_rate_hz"]) > 1
    assert -1 <= float(bad["clap_score"]) <= 1
    summary = json.loads((run / "analysis/summary.json").read_text())
    assert summary["model_based"]["status"] == "ok"
    assert all(np.isfinite(v) for v in summary["model_based"]["fad"].values())
    assert all(np.isfinite(s["diversity"]) for s in summary["sets"].values())
    assert (run / "analysis/plots/spectrograms.png").is_file()
    assert "- nan: `samples/tiny-musicgen/baseline/calm/1-1.wav`, " \
           "`samples/tiny-musicgen/hot/loud/0-0.wav`" in (run / "analysis/report.md").read_text()


@pytest.mark.slow
def test_plain_folder_with_a_corrupt_and_a_silent_file(acr, tmp_path):
    folder = tmp_path / "audio"
    rate = 22050
    write(folder / "drums.wav", drums(120, 4, rate), rate)
    write(folder / "chords.flac", progression([[60, 64, 67], [65, 69, 72]] * 2, rate), rate,
          subtype="PCM_16")
    write(folder / "nested/tone.wav", np.stack([sine(440, 4, rate, -12)] * 2), rate)
    write(folder / "silence.wav", np.zeros(rate * 4), rate)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (folder / "notes.txt").write_text("not audio")
    result = acr("analyze", folder, "--out", tmp_path / "out", "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    assert "skipped broken.wav: unreadable" in result.stderr
    assert "1 clip(s) flagged silent: silence.wav" in result.stderr
    rows = read_csv(tmp_path / "out/metrics.csv")
    assert sorted(r["path"] for r in rows) == ["chords.flac", "drums.wav", "nested/tone.wav",
                                               "silence.wav"]
    assert all(r["model"] == "" and r["parameter_set"] == "" for r in rows)
    silent = next(r for r in rows if r["path"] == "silence.wav")
    assert silent["flags"] == "silent" and silent["loudness_lufs"] == ""
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["skipped"][0]["path"] == "broken.wav"
    assert summary["analysed"]["settings"] == ["all"]
    report = (tmp_path / "out/report.md").read_text()
    assert "skipped `broken.wav`: unreadable" in report
    assert not (folder / "analysis").exists()
    # the counts, and words for a folder without prompts (no talk of prompts it does not have)
    assert "\n4 clips (4 analysed, 0 cached), 1 file skipped\n" in result.stderr
    assert "\nmean ± 95% CI (over clips)\nsetting\tLUFS\tcentroid Hz\tflatness\tonsets/s\tBPM\t" \
           "repetition\nall\t" in result.stderr
    assert "\n4 clips in one group (`all`). 4 analysed now, 0 from the cache; 1 unreadable file " \
           f"skipped. Metric version {METRIC_VERSION}; written " in report
    assert "\nThese clips have no prompts, so each clip counts once; means come with 95% " \
           "bootstrap confidence intervals over clips.\n" in report
    assert "\n## Differences between settings\n\nOne setting (`all`): nothing to compare.\n" \
        in report
    assert "per prompt" not in report and "over prompts" not in report
    again = acr("analyze", folder, "--out", tmp_path / "out", "--no-model-metrics")
    assert "\n4 clips (0 analysed, 4 cached), 1 file skipped\n" in again.stderr


@pytest.mark.slow
def test_reference_folder_for_frechet_distances(acr, run, tmp_path):
    reference = tmp_path / "reference"
    for i in range(4):
        write(reference / f"{i}.wav", 0.3 * drums(100 + 10 * i, 1.0, 32000, seed=i), 32000)
    result = acr("analyze", run, "--reference", reference, "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    sets = json.loads((run / "analysis/summary.json").read_text())["sets"]
    assert sets["baseline"]["frechet_to"] == "reference"
    assert sets["baseline"]["frechet_distance"] > 0


@pytest.mark.slow
def test_analyze_a_generate_run(acr, in_tmp):
    assert acr("generate", "--model", "tiny-audiogen", "-p", "dog barks", "-p", "rain",
               "--duration", "1", "--seed", "1", "--out", "G").exit_code == 0
    result = acr("analyze", "G", "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    rows = read_csv(in_tmp / "G/analysis/metrics.csv")
    assert [(r["path"], r["model"], r["prompt"]) for r in rows] == [
        ("samples/0-dog-barks.wav", "tiny-audiogen", "dog barks"),
        ("samples/1-rain.wav", "tiny-audiogen", "rain")]


@pytest.mark.parametrize("setup, message", [
    ("missing", "{folder}: no such folder; give a run folder or a folder of audio files"),
    ("file", "{folder}: is a file, not a folder; give a run folder or a folder of audio files "
             "(a single file is not analysed on its own: put it in a folder)"),
    ("reference file", "--reference {folder}/ref.wav: is a file, not a folder; give a folder of "
                       "reference audio files (a single file is not analysed on its own: put "
                       "it in a folder)"),
    ("empty", "no audio files"),
    ("unreadable", "none of the 2 audio files could be read"),
])
def test_bad_input_exits_2_and_writes_nothing(acr, tmp_path, setup, message):
    folder = tmp_path / ("input.wav" if setup == "file" else "input")
    extra = []
    if setup == "file":
        write(folder, sine(440, 1, 16000), 16000)  # a WAV where a folder belongs
    elif setup != "missing":
        folder.mkdir()
        (folder / "readme.txt").write_text("x")
    if setup == "unreadable":
        (folder / "a.wav").write_bytes(b"nope")
        (folder / "b.flac").write_bytes(b"")
    if setup == "reference file":
        write(folder / "a.wav", sine(440, 1, 16000), 16000)
        extra = ["--reference", write(folder / "ref.wav", sine(440, 1, 16000), 16000)]
    result = acr("analyze", folder, *extra)
    assert result.exit_code == 2 and message.format(folder=folder) in result.stderr
    errors = [l for l in result.stderr.strip().splitlines() if not l.startswith("analysing:")]
    assert len(errors) == 1
    assert not (folder / "analysis").exists() or setup == "file"


ORDERED = """\
name: ordered
model: tiny-musicgen
device: cpu
seed: 3
batch_size: 8
defaults: {duration: 0.5}
prompt_sets:
  zeta: [soft piano, slow pad]
  alpha: [heavy drums, brass hits]
parameter_sets:
  music_forward: {temperature: 1.2}
  even: {}
  another: {top_k: 10}
analyze: false
"""


@pytest.mark.slow
def test_settings_and_baseline_follow_the_config_order(acr, in_tmp):
    """Not alphabetical: the first parameter set is the baseline unless `baseline:` names one,
    and every list (summary, tables, report, metrics.csv) keeps the config's order."""
    (in_tmp / "o.yaml").write_text(ORDERED)
    assert acr("experiment", "o.yaml", "--out", "R").exit_code == 0
    result = acr("analyze", "R", "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((in_tmp / "R/analysis/summary.json").read_text())
    assert summary["analysed"]["settings"] == ["music_forward", "even", "another"]
    assert summary["analysed"]["baseline"] == "music_forward"
    assert list(summary["sets"]) == ["music_forward", "even", "another"]
    assert summary["sets"]["even"]["frechet_to"] == "music_forward"
    pairs = summary["tests"]["loudness_lufs"]["settings"]["pairs"]
    assert [(p["a"], p["b"]) for p in pairs] == [("music_forward", "even"),
                                                 ("music_forward", "another"),
                                                 ("even", "another")]
    assert list(summary["tests"]["loudness_lufs"]["prompt_sets"]["groups"]) == ["zeta", "alpha"]
    rows = read_csv(in_tmp / "R/analysis/metrics.csv")
    assert [(r["parameter_set"], r["prompt_set"], r["prompt_index"]) for r in rows[:5]] == [
        ("music_forward", "zeta", "0"), ("music_forward", "zeta", "1"),
        ("music_forward", "alpha", "0"), ("music_forward", "alpha", "1"), ("even", "zeta", "0")]
    table = result.stderr.split("mean ± 95% CI (over prompts); * differs from music_forward "
                                "(Holm p < 0.05)\n")[1].splitlines()
    assert table[0] == "setting\tLUFS\tcentroid Hz\tflatness\tonsets/s\tBPM\trepetition"
    assert [line.split("\t")[0] for line in table[1:4]] == ["music_forward", "even", "another"]
    assert table[4] == "12 clips (12 analysed, 0 cached)"
    report = (in_tmp / "R/analysis/report.md").read_text()
    assert "12 clips in 3 settings (music_forward, even, another); baseline: `music_forward`. " \
           "12 analysed now, 0 from the cache. Metric version" in report
    assert json.loads((in_tmp / "R/experiment.json").read_text())["config"]["baseline"] == \
        "music_forward"

    # `baseline: even`: recorded with the run and used by the analysis
    result = acr("experiment", "o.yaml", "--out", "B", "--set", "baseline=even")
    assert result.exit_code == 0, result.stderr
    assert json.loads((in_tmp / "B/experiment.json").read_text())["config"]["baseline"] == "even"
    assert acr("analyze", "B", "--no-model-metrics").exit_code == 0
    summary = json.loads((in_tmp / "B/analysis/summary.json").read_text())
    assert summary["analysed"]["settings"] == ["music_forward", "even", "another"]
    assert summary["analysed"]["baseline"] == "even"
    assert summary["sets"]["music_forward"]["frechet_to"] == "even"
    (in_tmp / "B/experiment.json").unlink()  # a run stopped before its manifest: config.yaml
    assert acr("analyze", "B", "--no-model-metrics").exit_code == 0
    summary = json.loads((in_tmp / "B/analysis/summary.json").read_text())
    assert (summary["analysed"]["settings"], summary["analysed"]["baseline"]) == (
        ["music_forward", "even", "another"], "even")


@pytest.mark.slow
def test_experiment_with_analyze_true_analyses_at_the_end(acr, in_tmp):
    (in_tmp / "g.yaml").write_text(GRID.replace("analyze: false", "analyze: true").replace(
        "samples_per_prompt: 2", "samples_per_prompt: 1"))
    result = acr("experiment", "g.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    assert len(read_csv(in_tmp / "R/analysis/metrics.csv")) == 12
    events = (in_tmp / "R/events.jsonl").read_text()
    assert '"analysis.done"' in events


@pytest.mark.slow
def test_clap_that_is_not_there_is_unavailable_with_what_to_do(tmp_path):
    from acr.core.transformers_models import Unavailable, load_clap

    with pytest.raises(Unavailable, match=r"not a CLAP model folder with its processor"):
        load_clap(str(tmp_path))
    with pytest.raises(Unavailable, match=r"run `hf download laion/not-cached`"):
        load_clap("laion/not-cached")
