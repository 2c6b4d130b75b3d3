"""No file acr reads can run code (issue 19): every checkpoint, cache entry and record from a run
folder, a model folder or a cache goes through acr.core.safe_load. Each test plants a payload
whose unpickling would create a sentinel file, points acr at it, and checks that the sentinel
never appears, the exit code is 2 and the message names the file."""
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from acr.core.safe_load import UnreadableFile, UnsafeFile, load_checkpoint, read_json
from helpers import ROOT, run_python
from synth import progression, write

UNSAFE = "is not a safe acr checkpoint (it would need to run code to load)"

FINETUNE = """\
name: ft
model: tiny-musicgen
data: {data}
strategy: full
epochs: 1
lr: 3.0e-3
segment_duration: 2.0
sample_every: 0
device: cpu
"""


class Payload:
    """Unpickling this creates `path`: what a hostile pickle could do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def plant(path: Path, sentinel: Path, legacy: bool = False) -> None:
    """Write a payload checkpoint to `path`: torch's zip format, or a plain pickle."""
    if legacy:
        path.write_bytes(pickle.dumps({"best_state": Payload(sentinel)}))
    else:
        torch.save({"best_state": {}, "xp.cfg": "", "weights": Payload(sentinel)}, path)


def test_the_payload_is_live(tmp_path):
    """The planted files really would create the sentinel if unpickled (so the tests below
    can see a loader that runs them)."""
    sentinel = tmp_path / "SENTINEL"
    plant(tmp_path / "a.pt", sentinel, legacy=True)
    pickle.loads((tmp_path / "a.pt").read_bytes())
    assert sentinel.exists()
    sentinel.unlink()
    plant(tmp_path / "b.pt", sentinel)
    torch.load(tmp_path / "b.pt", weights_only=False)  # the unsafe call acr never makes
    assert sentinel.exists()


# ---- the loader itself -------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_safe_loader_refuses_payloads_without_running_them(tmp_path, legacy):
    sentinel = tmp_path / "SENTINEL"
    plant(tmp_path / "x.pt", sentinel, legacy)
    with pytest.raises(UnsafeFile) as caught:
        load_checkpoint(tmp_path / "x.pt")
    assert caught.value.lines == [f"{tmp_path / 'x.pt'} {UNSAFE}"]
    (tmp_path / "x.json").write_bytes((tmp_path / "x.pt").read_bytes())
    with pytest.raises(UnsafeFile, match=re.escape(f"{tmp_path / 'x.json'} {UNSAFE}")):
        read_json(tmp_path / "x.json")
    assert not sentinel.exists()


def test_safe_loader_reads_tensors_and_plain_values_and_names_garbage(tmp_path):
    value = {"w": torch.arange(3.0), "lr": 1e-4, "betas": (0.9, 0.95), "steps": [1, 2],
             "name": "x", "none": None}
    torch.save(value, tmp_path / "good.pt")
    loaded = load_checkpoint(tmp_path / "good.pt")
    assert torch.equal(loaded.pop("w"), value.pop("w")) and loaded == value
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    good = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[:len(good) // 2])
    for name in ("text.pt", "empty.pt", "cut.pt"):
        with pytest.raises(UnreadableFile, match=re.escape(str(tmp_path / name)) +
                           " is not a (readable )?torch checkpoint"):
            load_checkpoint(tmp_path / name)
    (tmp_path / "bad.json").write_text('{"a": 1,')
    with pytest.raises(UnreadableFile, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


# ---- nothing in acr can load unsafely ----------------------------------------------------------

FORBIDDEN = [
    (r"weights_only\s*=\s*(?!True\b)", "weights_only other than True"),
    (r"\bpickle\.loads?\(|\bcPickle\b|\bdill\b|\bmarshal\.loads?\(|\bshelve\.open\(",
     "pickle / marshal / shelve loading"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\byaml\.(load|load_all|unsafe_load|full_load)\((?![^)]*Loader=yaml\.(C?SafeLoader))",
     "yaml.load without a safe loader"),
    (r"(?<![\w.])eval\(|(?<![\w.])exec\(", "eval / exec"),
    (r"shell\s*=\s*True", "shell=True"),
    (r"\btorch\.load\(|\btorch\.jit\.load\(", "torch.load outside acr/core/safe_load.py"),
]


def unsafe_calls(root: Path) -> list[str]:
    """`file:line: what` for every way to run code from a file found in the package."""
    problems = []
    for path in sorted((root / "acr").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in FORBIDDEN:
                if re.search(pattern, code) and not (
                        rel == "acr/core/safe_load.py" and "torch.load" in what):
                    problems.append(f"{rel}:{number}: {what}: {line.strip()}")
    return problems


def test_the_package_has_no_way_to_run_code_from_a_file():
    assert unsafe_calls(ROOT) == []


def test_the_grep_catches_each_kind(tmp_path):
    bad = tmp_path / "acr" / "core" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("torch.load(p, weights_only=False)\nx = pickle.load(fh)\n"
                   "np.load(p, allow_pickle=True)\nyaml.load(text)\neval('1')\n"
                   "subprocess.run(c, shell=True)\ntorch.load(p)\n"
                   "yaml.load(text, Loader=yaml.SafeLoader)\nmodel.eval()\n")
    kinds = [p.split(": ")[1] for p in unsafe_calls(tmp_path)]
    assert kinds == ["weights_only other than True", "torch.load outside acr/core/safe_load.py",
                     "pickle / marshal / shelve loading", "np.load(allow_pickle=True)",
                     "yaml.load without a safe loader", "eval / exec", "shell=True",
                     "torch.load outside acr/core/safe_load.py"]


# ---- each file type, through the CLI -----------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from acr.commands.finetune import data

    folder = tmp_path_factory.mktemp("sec") / "demo"
    data.make_demo_data(folder, files_per_class=1, seconds=2.0)
    return folder


@pytest.fixture(scope="module")
def finished_finetune(tmp_path_factory, demo):
    from typer.testing import CliRunner

    from acr.cli import app

    folder = tmp_path_factory.mktemp("ftrun")
    (folder / "ft.yaml").write_text(FINETUNE.format(data=demo))
    result = CliRunner().invoke(app, ["finetune", str(folder / "ft.yaml"), "--out",
                                      str(folder / "R")])
    assert result.exit_code == 0, result.stderr
    return folder / "R"


@pytest.mark.slow
def test_a_finetune_checkpoint_is_plain_values(finished_finetune):
    """last.pt loads with torch's weights-only unpickler, numpy's random state as ints."""
    saved = torch.load(finished_finetune / "checkpoints/last.pt", weights_only=True)
    assert set(saved) == {"weights", "optimizer", "scheduler", "scaler", "state", "rng"}
    numpy_state = saved["rng"]["numpy"]
    assert numpy_state["bit_generator"] == "MT19937" and len(numpy_state["key"]) == 624
    assert all(type(k) is int for k in numpy_state["key"])


def test_numpy_random_state_round_trips_exactly():
    import numpy as np

    from acr.commands.finetune.checkpoints import numpy_state, set_numpy_state

    np.random.seed(7)
    np.random.normal()  # leaves a cached Gaussian
    saved = numpy_state()
    expected = (np.random.normal(), np.random.randint(0, 2**31, 5).tolist())
    np.random.seed(1)
    set_numpy_state(saved)
    assert (np.random.normal(), np.random.randint(0, 2**31, 5).tolist()) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", ["checkpoints/last.pt", "checkpoints/best.pt", "meta.json"])
def test_resume_refuses_an_unsafe_file_and_changes_nothing(acr, tmp_path, finished_finetune,
                                                           name):
    run = tmp_path / "R"
    shutil.copytree(finished_finetune, run)
    sentinel = tmp_path / "SENTINEL"
    plant(run / name, sentinel)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = acr("finetune", "--resume", run)
    assert result.exit_code == 2, result.stderr
    assert f"{run / name} {UNSAFE}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not sentinel.exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # status too


@pytest.mark.slow
def test_finetune_refuses_an_unsafe_code_cache_entry(acr, tmp_path, demo, monkeypatch):
    monkeypatch.setenv("ACR_HOME", str(tmp_path / "home"))  # a cache of this test's own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ft.yaml").write_text(FINETUNE.format(data=demo))
    assert acr("finetune", "ft.yaml", "--out", "A").exit_code == 0
    entries = sorted((tmp_path / "home/cache/codes").glob("*.pt"))
    assert entries
    sentinel = tmp_path / "SENTINEL"
    plant(entries[0], sentinel)
    result = acr("finetune", "ft.yaml", "--out", "B")
    assert result.exit_code == 2, result.stderr
    assert f"{entries[0]} {UNSAFE}; delete it and run again" in result.stderr
    assert not sentinel.exists() and not (tmp_path / "B").exists()


@pytest.fixture
def model_folder(tmp_path):
    from acr.core import models

    source = models.ensure_tiny_model("tiny-musicgen")
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    return folder


@pytest.mark.parametrize("name", ["state_dict.bin", "compression_state_dict.bin"])
@pytest.mark.parametrize("force_unsafe_default", [False, True])
def test_generate_refuses_an_unsafe_model_folder(acr, in_tmp, model_folder, monkeypatch, name,
                                                 force_unsafe_default):
    """Also with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which makes audiocraft's own torch.load
    calls (no weights_only argument) unpickle anything: acr reads the files safely first."""
    if force_unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sentinel = in_tmp / "SENTINEL"
    plant(model_folder / name, sentinel)
    result = acr("generate", "-m", model_folder, "-p", "x", "--duration", "0.2")
    assert result.exit_code == 2, result.stderr
    assert f"{model_folder / name} {UNSAFE}" in result.stderr
    assert not sentinel.exists() and not (in_tmp / "experiments").exists()


@pytest.mark.slow
def test_audiocraft_own_loader_is_weights_only_on_this_torch(model_folder):
    """audiocraft 1.3.0's load_lm_model_ckpt calls torch.load without weights_only; torch 2.11
    then defaults to weights_only=True and refuses the payload (unless the environment says
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: the case acr's own safe read covers above)."""
    sentinel = model_folder.parent / "SENTINEL"
    plant(model_folder / "state_dict.bin", sentinel)
    code = ("import sys\nfrom audiocraft.models import loaders\n"
            "try:\n    loaders.load_lm_model_ckpt(sys.argv[1])\n"
            "except Exception as exc:\n    print(type(exc).__name__)\n")
    proc = run_python(code, str(model_folder))
    assert proc.stdout.strip() == "UnpicklingError", proc.stderr[-2000:]
    assert not sentinel.exists()


@pytest.mark.parametrize("content", ["text", "dict", "missing"])
def test_a_folder_that_is_not_a_model_exits_2(acr, in_tmp, content):
    """Issue 17 #4: files that are not checkpoints are bad input, not a torch traceback."""
    folder = in_tmp / "notamodel"
    folder.mkdir()
    for name in ("state_dict.bin", "compression_state_dict.bin"):
        if content == "text":
            (folder / name).write_text("hello\n")
        elif content == "dict":
            torch.save({"weights": torch.zeros(2)}, folder / name)
    if content == "missing":
        (folder / "state_dict.bin").write_text("hello\n")
    result = acr("generate", "-m", "./notamodel", "-p", "x", "--duration", "0.2")
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    expected = {"text": "notamodel: not an AudioCraft model folder (state_dict.bin is not a "
                        "torch checkpoint",
                "dict": "notamodel: not an AudioCraft model folder (state_dict.bin holds no "
                        "best_state and xp.cfg)",
                "missing": "notamodel: missing compression_state_dict.bin"}[content]
    assert expected in lines[0]
    assert not (in_tmp / "experiments").exists()


@pytest.mark.slow
@pytest.mark.parametrize("cache_file", ["features-v*.json", "outputs.json"])
def test_analyze_refuses_an_unsafe_cache_entry(acr, tmp_path, cache_file):
    """The per-clip index (read when a clip changed) and the record of the last outputs (read
    on every re-run): a payload in either is refused, nothing of it runs."""
    folder = tmp_path / "clips"
    for index, root in enumerate((60, 62)):
        write(folder / f"{index}.wav", progression([[root, root + 4, root + 7]], 16000, 1.0),
              16000)
    assert acr("analyze", folder, "--no-model-metrics").exit_code == 0
    [entry] = sorted((folder / "analysis/cache").glob(cache_file))
    sentinel = tmp_path / "SENTINEL"
    plant(entry, sentinel)
    write(folder / "2.wav", progression([[64, 68, 71]], 16000, 1.0), 16000)  # a new clip
    result = acr("analyze", folder, "--no-model-metrics")
    assert result.exit_code == 2, result.stderr
    assert f"{entry} {UNSAFE}" in result.stderr
    assert not sentinel.exists()


def test_readme_has_a_security_section():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = " ".join(readme.split("## Security", 1)[1].split("\n## ", 1)[0].split())
    for phrase in ("weights_only", "state_dict.bin", "checkpoints/", "code cache",
                   "analysis cache", "exit code 2"):
        assert phrase in section, phrase
