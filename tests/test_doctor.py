"""`acr doctor`: a truthful environment report."""
import json
from importlib.metadata import version

from acr.commands.doctor import model_fit
from helpers import run_python


def _xformers_library_loads() -> bool:
    """Whether xformers' compiled library loads into this torch, asked in a fresh process by
    torch itself (not through xformers' own record of its attempt, which the doctor reads)."""
    proc = run_python(
        "import importlib.util, pathlib, torch\n"
        "folder = pathlib.Path(importlib.util.find_spec('xformers').origin).parent\n"
        "libraries = sorted(folder.glob('_C*.so')) + sorted(folder.glob('_C*.pyd'))\n"
        "torch.ops.load_library(str(libraries[0])) if libraries else exit(3)\n")
    return proc.returncode == 0


def test_doctor_json_reports_versions_devices_models_and_caches(acr, monkeypatch, tmp_path):
    hub = tmp_path / "hub"
    snapshot = hub / "models--facebook--musicgen-small" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "state_dict.bin").write_bytes(b"x")
    (hub / "models--facebook--musicgen-small" / "refs").mkdir()
    (hub / "models--facebook--musicgen-small" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    result = acr("doctor", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["versions"]["torch"] == version("torch")
    assert data["versions"]["audiocraft"] == "1.3.0" and data["versions"]["acr"] == version("acr")
    cpu = data["devices"][0]
    assert cpu["device"] == "cpu" and cpu["cores"] >= 1 and cpu["memory_total"] > cpu["memory_free"] > 0
    fit = {m["model"]: m for m in data["models"]["fit"]}
    assert fit["musicgen-small"]["weights_gb"] < fit["musicgen-large"]["weights_gb"]
    assert data["hub"]["downloaded"] == ["musicgen-small"]
    assert data["hub"]["reachable"] is None and "HF_HUB_OFFLINE" in data["hub"]["note"]
    assert data["optional"]["xformers_kernels"] is _xformers_library_loads()
    assert "WARNING[XFORMERS]" not in result.stderr


def test_doctor_text_report(acr):
    result = acr("doctor", "--no-network")
    assert result.exit_code == 0
    for text in ("audiocraft 1.3.0", "devices:", "cpu:", "musicgen-small", "Hugging Face cache",
                 "hub: not checked"):
        assert text in result.stdout, text


def test_model_fit_suggests_batches_from_free_memory():
    small_gpu = {"device": "cuda:0", "memory_free": 8e9}
    big_gpu = {"device": "cuda:0", "memory_free": 80e9}
    small = {m["model"]: m for m in model_fit(small_gpu)}
    big = {m["model"]: m for m in model_fit(big_gpu)}
    assert small["musicgen-small"]["fits"] and not small["musicgen-large"]["fits"]
    assert small["musicgen-large"]["suggested_batch_size"] == 0
    assert big["musicgen-large"]["fits"]
    assert big["musicgen-small"]["suggested_batch_size"] > small["musicgen-small"][
        "suggested_batch_size"] >= 1
    assert all(m["suggested_batch_size"] <= 64 for m in big.values())


def test_xformers_kernels_follow_the_library_load(monkeypatch):
    """The report follows xformers' load attempt both ways (a failed load is not 'yes')."""
    import logging

    from acr.commands import doctor

    logging.getLogger("xformers").setLevel(logging.ERROR)
    from xformers import _cpp_lib

    monkeypatch.setattr(_cpp_lib, "_cpp_library_load_exception", None)
    assert doctor.report(check_network=False)["optional"]["xformers_kernels"] is True
    monkeypatch.setattr(_cpp_lib, "_cpp_library_load_exception", OSError("undefined symbol"))
    assert doctor.report(check_network=False)["optional"]["xformers_kernels"] is False
