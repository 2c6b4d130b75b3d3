"""acr.core.clips: a run's clips and their groups, as `acr analyze` and `acr listen` both see
them (one rule for settings and blocks, in one place)."""
import json
from pathlib import Path

from acr.commands.listen.clips import run_clips
from acr.core.clips import NOT_CLIPS, discover
from synth import tone, write

RATE = 8000


def clip(path: Path, sidecar=None) -> None:
    write(path, 0.2 * tone(220, 0.2, RATE), RATE, "PCM_16")
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))


def mixed_run(root: Path) -> Path:
    """Two models' clips, an image item, a hybrid stem, a sidecar that is not an object, a
    hidden file, and audio in the folders that hold no clips (the trackers', analysis, the
    listening tests): no samples/ folder, so everything below the run is searched."""
    run = root / "run"
    for model in ("small", "medium"):
        for setting in ("baseline", "hot"):
            clip(run / model / setting / "0.wav", {
                "model": model, "parameter_set": setting, "prompt_set": "calm",
                "prompt_index": 0, "sample_index": 0, "prompt": "soft piano"})
    clip(run / "medium" / "image.wav", {
        "model": "medium", "parameter_set": "baseline", "sample_index": 1,
        "prompt": "a described sunset", "image": {"file": "images/ab12-sunset.png"}})
    clip(run / "medium" / "mix-stem.wav", {"model": "medium", "stem_of": "mix.wav"})
    clip(run / "odd.wav", ["not", "an", "object"])
    clip(run / ".hidden" / "x.wav")
    for folder in ("wandb", "tensorboard", "analysis", "listening"):
        clip(run / folder / "media" / "copy.wav")
    return run


def test_analyze_and_listen_group_a_run_alike(tmp_path):
    run = mixed_run(tmp_path)
    listed = {c.rel: (c.setting, c.block) for c in run_clips(run)}
    expected = {
        "medium/baseline/0.wav": ("medium:baseline", "calm/0"),
        "medium/hot/0.wav": ("medium:hot", "calm/0"),
        "small/baseline/0.wav": ("small:baseline", "calm/0"),
        "small/hot/0.wav": ("small:hot", "calm/0"),
        # an image item without a prompt set: its block is the image, not the description
        "medium/image.wav": ("medium:baseline", "images/ab12-sunset.png"),
        # no groups: its model is unknown, so no "None:" in its setting; its own block
        "odd.wav": ("all", "odd.wav"),
    }
    assert listed == expected
    assert set(NOT_CLIPS) == {"wandb", "tensorboard", "analysis", "listening"}
    analysed = discover(run, skip_tops=NOT_CLIPS)  # (as acr analyze calls it)
    assert {c.rel: (c.setting, c.block) for c in analysed} == expected


def test_listen_takes_the_samples_folder_named_from_the_run_folder(tmp_path):
    """Below RUN/samples/, a model's folder may have any name, that of a folder NOT_CLIPS names
    at the run's top among them (a model loaded from .../tensorboard); outside it, nothing is
    taken."""
    run = tmp_path / "run"
    for model in ("tiny", "tensorboard"):
        clip(run / "samples" / model / "baseline" / "calm" / "0-0.wav", {
            "model": model, "parameter_set": "baseline", "prompt_set": "calm",
            "prompt_index": 0, "sample_index": 0, "prompt": "soft piano"})
    clip(run / "elsewhere" / "0.wav")
    listed = [(c.rel, c.setting, c.block, c.prompt, c.sample_index) for c in run_clips(run)]
    assert listed == [
        ("samples/tensorboard/baseline/calm/0-0.wav", "tensorboard:baseline", "calm/0",
         "soft piano", 0),
        ("samples/tiny/baseline/calm/0-0.wav", "tiny:baseline", "calm/0", "soft piano", 0)]
    found = discover(run / "samples", skip_tops=NOT_CLIPS, relative_to=run)
    assert [(c.rel, c.path) for c in found] == [(rel, run / rel) for rel, *_ in listed]
