"""Model resolution and the tiny models: real AudioCraft release folders, loaded like real ones."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from acr.core import models
from acr.core.errors import UsageError
from helpers import ROOT, gpu, plain_audiocraft_generates, requires_gpu, tiny_melody_config


def test_short_names_and_hub_ids_resolve_without_loading():
    assert models.resolve_model("musicgen-small") == models.ModelSpec(
        "musicgen-small", "facebook/musicgen-small", "musicgen", "hub")
    assert models.resolve_model("audiogen-medium").family == "audiogen"
    assert models.resolve_model("musicgen-stereo-melody-large").source == \
        "facebook/musicgen-stereo-melody-large"
    assert models.resolve_model("magnet-small-10secs").family == "magnet"
    assert models.resolve_model("facebook/audiogen-medium").family == "audiogen"
    assert models.resolve_model("someone/my-musicgen").kind == "hub"


def test_tiny_models_live_under_acr_home(acr_home):
    spec = models.resolve_model("tiny-audiogen")
    assert (spec.family, spec.kind) == ("audiogen", "tiny")
    assert Path(spec.source).parent == acr_home / "models"


def test_unknown_name_lists_known_ones():
    with pytest.raises(UsageError) as info:
        models.resolve_model("musicgen-tiny")
    assert "unknown model 'musicgen-tiny'; known models: tiny-musicgen, tiny-audiogen, " \
           "musicgen-small" in info.value.lines[0]


def test_folder_without_release_files_is_refused(tmp_path):
    (tmp_path / "state_dict.bin").write_bytes(b"")
    with pytest.raises(UsageError, match="missing compression_state_dict.bin"):
        models.resolve_model(str(tmp_path))
    with pytest.raises(UsageError, match="no such folder"):
        models.resolve_model(str(tmp_path / "nope" / "deeper"))


def test_tiny_model_folder_is_in_release_layout():
    folder = models.ensure_tiny_model("tiny-musicgen")
    for name in models.RELEASE_FILES:
        pkg = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert set(pkg) == {"best_state", "xp.cfg", "version", "exported"}
        assert isinstance(pkg["xp.cfg"], str) and "segment_duration: 30.0" in pkg["xp.cfg"]
    lm_state = torch.load(folder / "state_dict.bin", weights_only=True)["best_state"]
    n_params = sum(t.numel() for t in lm_state.values())
    assert 100_000 < n_params < 1_000_000


def test_tiny_models_load_with_the_right_class_and_rate():
    music = models.load_model("tiny-musicgen", "cpu")
    sound = models.load_model("tiny-audiogen", "cpu")
    assert type(music.model).__name__ == "MusicGen" and music.sample_rate == 32000
    assert type(sound.model).__name__ == "AudioGen" and sound.sample_rate == 16000
    assert (music.max_duration, sound.max_duration) == (30.0, 10.0)
    assert music.frame_rate == sound.frame_rate == 50
    assert models.load_model("tiny-musicgen", "cpu") is music  # loaded once per process


@pytest.mark.slow
def test_plain_audiocraft_loads_the_tiny_folder_in_another_process():
    folder = models.ensure_tiny_model("tiny-musicgen")
    assert plain_audiocraft_generates(folder) == "(1, 1, 32000) 32000"


def test_local_folder_family_comes_from_its_config(tmp_path):
    """A folder like `acr finetune` writes: AudioGen config, loaded by folder path."""
    cfg = models.tiny_model_config("tiny-audiogen")
    source = models.load_model("tiny-audiogen", "cpu").model
    models.write_release_folder(tmp_path / "mine", cfg, source.lm.state_dict(),
                                source.compression_model.state_dict())
    loaded = models.load_model(str(tmp_path / "mine"), "cpu")
    assert loaded.family == "audiogen" and loaded.sample_rate == 16000
    assert loaded.spec.kind == "folder"


def test_resolve_device_cpu_and_auto():
    assert models.resolve_device("cpu") == "cpu"
    assert models.resolve_device("auto") in ("cpu", "cuda", "mps")


def test_cuda_index_out_of_range():
    if torch.cuda.is_available():
        bad = f"cuda:{torch.cuda.device_count()}"
        with pytest.raises(UsageError, match="CUDA device"):
            models.resolve_device(bad)
    else:
        with pytest.raises(UsageError, match="use --device cpu"):
            models.resolve_device("cuda:1")


@gpu
@requires_gpu
def test_tiny_model_generates_on_cuda():
    loaded = models.load_model("tiny-musicgen", "cuda")
    assert loaded.device == "cuda"
    from acr.core.config.schema import GenerationParams
    from acr.core.engine import generate_batch, resolve_params

    params = resolve_params(GenerationParams(duration=1.0), loaded)
    wav = generate_batch(loaded, ["a", "b"], params, seed=1)
    assert wav.shape == (2, 1, 32000) and wav.device.type == "cpu"


def test_a_missing_demucs_is_a_clear_usage_error(tmp_path, monkeypatch):
    """A melody model (the tiny LM with AudioCraft's chroma_stem conditioner) imports demucs
    while AudioCraft builds it; where demucs is not installed (here: its import blocked), acr
    says what to install instead of failing with a traceback."""
    import sys

    cfg = tiny_melody_config()
    source = models.load_model("tiny-musicgen", "cpu").model
    models.write_release_folder(tmp_path / "melody", cfg, source.lm.state_dict(),
                                source.compression_model.state_dict())
    monkeypatch.setitem(sys.modules, "demucs", None)  # as if not installed
    with pytest.raises(UsageError) as info:
        models.load_model(str(tmp_path / "melody"), "cpu")
    assert info.value.lines == [
        f"model '{tmp_path / 'melody'}' needs the demucs package for its melody conditioning: "
        "pip install demucs==4.0.1 (the version of acr's requirements.txt)"]


def test_demucs_weights_that_cannot_download_are_named(tmp_path, monkeypatch):
    """An empty torch hub cache and no way to reach demucs' download host: a clear usage
    error naming the file and where it goes, not a URLError traceback."""
    import torch
    from demucs import pretrained

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(pretrained, "ROOT_URL", "http://127.0.0.1:9/")  # nothing listens there
    cfg = tiny_melody_config()
    source = models.load_model("tiny-musicgen", "cpu").model
    models.write_release_folder(tmp_path / "melody", cfg, source.lm.state_dict(),
                                source.compression_model.state_dict())
    with pytest.raises(UsageError) as info:
        models.load_model(str(tmp_path / "melody"), "cpu")
    target = Path(torch.hub.get_dir()) / "checkpoints" / models.HTDEMUCS_FILE
    assert info.value.lines == [
        f"model '{tmp_path / 'melody'}': its melody conditioning needs demucs' htdemucs weights, "
        f"which are not in {target.parent} and cannot be downloaded here; on a connected machine "
        "run `python -c \"from demucs import pretrained; pretrained.get_model('htdemucs')\"` "
        f"and copy {target} to the same place here"]


def test_requirements_pin_demucs_and_what_it_imports():
    """demucs is in the tested set with the two packages it imports beyond audiocraft's."""
    pins = dict(line.split(";")[0].strip().split("==")  # a line may carry a marker: ; platform...
                for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["demucs"] == "4.0.1" and "lameenc" in pins and "openunmix" in pins


def test_audiocraft_is_imported_without_wandb_and_wandb_still_imports_after():
    """flashy (imported by audiocraft) imports wandb for a logger acr never uses; acr's import
    of audiocraft leaves it out, and an `import wandb` later in the process works; where wandb
    was imported first, flashy gets it as before. In fresh interpreters (this one may have
    imported wandb already)."""
    def run(first: str) -> list[str]:
        code = (f"import sys\n{first}\n"
                "from acr.core.models import import_audiocraft\n"
                "import_audiocraft()\n"
                "import flashy.loggers.wandb as logger\n"
                "print('@', 'audiocraft' in sys.modules, 'wandb' in sys.modules,"
                " getattr(logger.wandb, '__name__', None))\n"
                "import wandb\n"
                "print('@', wandb.__name__, 'wandb' in sys.modules)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith("@ ")]

    assert run("") == ["@ True False None", "@ wandb True"]
    assert run("import wandb") == ["@ True True wandb", "@ wandb True"]
