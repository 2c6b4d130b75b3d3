"""benchmarks/gpu.py: its refusals, and its whole path as a CPU smoke run on the tiny model."""
import importlib.util
import json
import sys

import pytest
import torch

from acr.core.memory import generation_bytes_per_sample
from helpers import ROOT

RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_benchmark"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_with_a_message_and_writes_nothing(tmp_path, capsys):
    bench = gpu_benchmark()
    before = RESULTS.read_bytes()
    assert bench.main(["--json", str(tmp_path / "r.json"),
                       "--results", str(tmp_path / "RESULTS.md")]) == 0
    assert "skipped: no CUDA GPU here" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and RESULTS.read_bytes() == before
    with pytest.raises(SystemExit) as info:  # the CPU has only the smoke run
        bench.main(["--device", "cpu"])
    assert info.value.code == 2
    assert "add --quick" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--quick", "--sections", "rtf,speed"])
    assert "--sections: unknown speed" in capsys.readouterr().err


@pytest.mark.slow
def test_cpu_smoke_run_covers_every_section_and_appends_one_section(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_bytes(RESULTS.read_bytes())  # a copy: the repository's file stays as it is
    before = RESULTS.read_bytes()
    bench = gpu_benchmark()
    assert bench.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "r.json"),
                       "--results", str(results)]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["model"], data["quick"]) == ("tiny-musicgen", True)
    sections = data["sections"]
    assert list(sections) == ["grid", "rtf", "memory", "finetune"]

    grid = sections["grid"]  # 2 parameter sets x 1 prompt x 2 samples
    assert grid["samples"] == 4
    assert grid["ratio"] == pytest.approx(grid["batched_samples_per_s"]
                                          / grid["loop_samples_per_s"])
    rtf = sections["rtf"]["rows"]
    assert [(r["precision"], r["batch"]) for r in rtf] == [("fp32", 1), ("fp32", 2),
                                                          ("bf16", 1), ("bf16", 2)]
    for row in rtf:
        assert row["rtf"] == pytest.approx(row["batch"] * 0.2 / row["seconds"])
    memory = sections["memory"]  # tiny-musicgen: dim 64, 2 layers, 30 s window, 4 x 256
    assert memory["predicted_bytes_per_sample"] == generation_bytes_per_sample(64, 2, 1500, 256, 4)
    assert memory["measured_bytes_per_sample"] is None and memory["forced_backoff"] is None
    assert memory["auto"] == {"batch_size": 8, "back_offs": 0, "clips": 8}  # 8 on the CPU
    rows = sections["finetune"]["rows"]
    assert [(r["strategy"], r["activation_checkpointing"]) for r in rows] == [
        ("full", False), ("full", True), ("last_layers", False), ("last_layers", True),
        ("lora", False), ("lora", True)]
    trainable = {r["strategy"]: r["trainable_parameters"] for r in rows}
    from acr.core.models import load_model

    lm = load_model("tiny-musicgen", "cpu").model.lm
    assert trainable["full"] == sum(p.numel() for p in lm.parameters())
    assert trainable["full"] > trainable["last_layers"] > trainable["lora"] > 0
    assert all(r["tokens_per_s"] > 0 and r["precision"] == "fp32" for r in rows)

    text = results.read_text()
    assert text.startswith(before.decode()) and RESULTS.read_bytes() == before
    added = text[len(before.decode()):]
    assert added.count("\n## ") == 1 and "(smoke run)" in added
    assert "SMOKE RUN (--quick): the figures mean nothing" in added
    assert "ratio:" in added and "tokens/s" in added
    assert "grid: 4 samples" in capsys.readouterr().out
