"""Fixtures. Helpers that tests import live in helpers.py (and test audio in synth.py)."""
import os

# Settings a caller's environment may carry that would change what the tests see, cleared before
# typer and rich read them: terminal detection and widths (tables and progress drawn for a
# terminal, colour codes in messages: typer forces colour on GitHub Actions), and Hugging Face
# cache locations that outrank the HF_HOME set below, and a token.
for _name in ("FORCE_COLOR", "PY_COLORS", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "GITHUB_ACTIONS",
              "COLUMNS", "TERMINAL_WIDTH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
              "TRANSFORMERS_CACHE", "HF_TOKEN"):
    os.environ.pop(_name, None)

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

TEST_ENVIRONMENT = ("ACR_HOME", "HF_HUB_OFFLINE", "HF_HOME", "TORCH_HOME")


@pytest.fixture(scope="session", autouse=True)
def acr_home(tmp_path_factory):
    """Every test (and subprocess) builds tiny models into one temporary ACR_HOME, offline, with
    empty Hugging Face and torch hub caches (demucs' weights live in the latter); the
    environment is restored when the session ends."""
    saved = {name: os.environ.get(name) for name in TEST_ENVIRONMENT}
    home = tmp_path_factory.mktemp("acr_home")
    os.environ["ACR_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so default run folders (experiments/...) land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def acr():
    """Invoke the real CLI in-process: acr(*args) -> result with exit_code, stdout, stderr."""
    from acr.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def tiny_htdemucs(acr_home):
    """A tiny random HTDemucs (about 7k parameters) where demucs' own loader looks for the
    `htdemucs` weights: torch's hub cache, under the file name of htdemucs' one model. Melody
    models load it through `pretrained.get_model('htdemucs')` exactly as they load the real
    one (whose download cannot happen here)."""
    from helpers import write_tiny_htdemucs

    return write_tiny_htdemucs()


@pytest.fixture(scope="session")
def tiny_melody_model(tiny_htdemucs, tmp_path_factory):
    """A tiny MusicGen with AudioCraft's chroma_stem (melody) conditioner, in the release
    layout: what musicgen-melody is, at the tiny model's size."""
    from helpers import write_tiny_melody_model

    return write_tiny_melody_model(tmp_path_factory.mktemp("models") / "tiny-melody")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP (about 30k parameters) in the Hugging Face layout, loaded by the real
    loader through --clip-model / clip_model: as a folder."""
    from helpers import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """acr's fine-tuning demo data (3 captioned files per class, 4 s each), made once and only
    read by the tests (test_finetune, test_tracking)."""
    from acr.commands.finetune import make_demo_data

    folder = tmp_path_factory.mktemp("ft") / "demo"
    make_demo_data(folder, files_per_class=3, seconds=4.0)
    return folder
