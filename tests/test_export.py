"""`acr export`: deterministic, verifiable, safe packages."""
import csv
import hashlib
import io
import json
import re
import shlex
import shutil
import struct
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from acr.core.runs import lock_run
from helpers import plain_audiocraft_generates

GRID = """\
name: grid
model: tiny-musicgen
device: cpu
seed: 2
samples_per_prompt: 1
batch_size: 4
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, slow pad]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
findings: [{title: first look, description: "token hf_abcdefghijklmnopqrstuvwxyz123456 leaked"}]
analyze: true
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An analysed experiment run and a one-epoch fine-tune run, made with the real CLI."""
    from typer.testing import CliRunner

    from acr.cli import app
    from acr.commands.finetune.data import make_demo_data

    root = tmp_path_factory.mktemp("export")
    (root / "grid.yaml").write_text(GRID)
    cli = CliRunner()
    result = cli.invoke(app, ["experiment", str(root / "grid.yaml"), "--out",
                              str(root / "grid/run1")])
    assert result.exit_code == 0, result.stderr
    make_demo_data(root / "demo", files_per_class=2, seconds=3.0)
    (root / "ft.yaml").write_text(f"name: ft\nmodel: tiny-musicgen\ndata: {root / 'demo'}\n"
                                  "strategy: lora\nepochs: 1\nsegment_duration: 2.0\n"
                                  "sample_every: 0\ndevice: cpu\n")
    result = cli.invoke(app, ["finetune", str(root / "ft.yaml"), "--out", str(root / "ft/run2")])
    assert result.exit_code == 0, result.stderr
    return root


def names(path):
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_experiment_package_is_complete_deterministic_and_verifies(acr, runs, tmp_path):
    run = runs / "grid/run1"
    assert acr("export", run, "-o", tmp_path / "a.zip").exit_code == 0
    assert acr("export", run, "-o", tmp_path / "b.zip").exit_code == 0
    assert sha(tmp_path / "a.zip") == sha(tmp_path / "b.zip")
    listing = names(tmp_path / "a.zip")
    assert listing[:-1] == sorted(listing[:-1]) and listing[-1] == "MANIFEST.json"
    for expected in ("README.md", "MANIFEST.json", "grid/run1/config.yaml", "grid/run1/meta.json",
                     "grid/run1/experiment.json", "grid/run1/events.jsonl",
                     "grid/run1/findings.json", "grid/run1/analysis/metrics.csv",
                     "grid/run1/analysis/summary.json", "grid/run1/analysis/report.md",
                     "grid/run1/analysis/plots/spectrograms.png",
                     "grid/run1/samples/tiny-musicgen/hot/calm/1-0.wav",
                     "grid/run1/samples/tiny-musicgen/hot/calm/1-0.json"):
        assert expected in listing, expected
    assert not [n for n in listing if "/cache/" in n or n.endswith((".lock", ".tmp"))]
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.testzip() is None
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
        manifest = json.loads(archive.read("MANIFEST.json"))
        assert set(manifest["files"]) == set(listing) - {"MANIFEST.json"}
        readme = archive.read("README.md").decode()
    assert "acr experiment grid/run1/config.yaml" in readme and "### Key metrics" in readme
    assert "**first look**" in readme
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-t", str(tmp_path / "a.zip")],
                              capture_output=True).returncode == 0
    result = acr("export", "--verify", tmp_path / "a.zip")
    assert result.exit_code == 0 and "ok" in result.stdout


@pytest.fixture(scope="module")
def package(runs, tmp_path_factory):
    """One package of the experiment run (WAV samples), for the corruption tests to copy."""
    from acr.commands.export import export_runs

    path, _ = export_runs([runs / "grid/run1"], tmp_path_factory.mktemp("package") / "p.zip")
    return path


def data_start(raw: bytes, info: zipfile.ZipInfo) -> int:
    """Where an entry's (compressed) data begins, from its local header."""
    name_length, extra_length = struct.unpack("<2H", raw[info.header_offset + 26:
                                                         info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length


def central_header(raw: bytes, name: str) -> int:
    """Offset of an entry's record in the zip's central directory."""
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack("<H", raw[at + 28:at + 30])[0]
        if raw[at + 46:at + 46 + length] == name.encode():
            return at
        at = raw.find(b"PK\x01\x02", at + 1)
    raise KeyError(name)


def verify_lines(acr, path) -> list[str]:
    """Run --verify on a corrupt package: exit 1, no traceback, the problem lines."""
    result = acr("export", "--verify", path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line[len(f"{path}: "):] for line in lines]


def corrupted(package, tmp_path, change) -> Path:
    raw = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    change(raw, infos)
    path = tmp_path / "corrupt.zip"
    path.write_bytes(bytes(raw))
    return path


SAMPLE = "grid/run1/samples/tiny-musicgen/baseline/calm/0-0.wav"
RECORD = "grid/run1/experiment.json"


def test_one_changed_byte_in_a_sample_fails_verify_naming_it(acr, package, tmp_path):
    def flip(raw, infos):
        raw[data_start(raw, infos[SAMPLE]) + infos[SAMPLE].compress_size // 2] ^= 0x01

    lines = verify_lines(acr, corrupted(package, tmp_path, flip))
    assert len(lines) == 1 and lines[0].startswith(f"{SAMPLE}: ")


def test_a_broken_deflate_stream_is_named_not_a_crash(acr, package, tmp_path):
    def invalid_block(raw, infos):  # BFINAL=1, BTYPE=11: a reserved block type (zlib.error)
        raw[data_start(raw, infos[RECORD])] = 0x07

    lines = verify_lines(acr, corrupted(package, tmp_path, invalid_block))
    assert lines == [f"{RECORD}: damaged, cannot be read (zlib.error: Error -3 while "
                     "decompressing data: invalid block type)"]


def test_a_bad_crc_is_named(acr, package, tmp_path):
    def bad_crc(raw, infos):
        at = central_header(raw, RECORD) + 16
        raw[at:at + 4] = struct.pack("<L", infos[RECORD].CRC ^ 0xFFFF)

    lines = verify_lines(acr, corrupted(package, tmp_path, bad_crc))
    assert len(lines) == 1 and lines[0].startswith(f"{RECORD}: damaged, cannot be read "
                                                   "(zipfile.BadZipFile: Bad CRC-32")


def test_a_truncated_package_names_where_it_was_cut(acr, package, tmp_path):
    raw = package.read_bytes()
    with zipfile.ZipFile(package) as archive:
        infos = archive.infolist()
    inside = infos[len(infos) // 2]
    (tmp_path / "cut.zip").write_bytes(raw[:data_start(raw, inside) + 1])
    assert verify_lines(acr, tmp_path / "cut.zip") == [
        f"{inside.filename}: cut off: the archive is truncated inside this entry "
        f"({len(infos) // 2} entries before it are intact); copy the package again"]
    end = data_start(raw, infos[-1]) + infos[-1].compress_size  # only the table of contents lost
    (tmp_path / "toc.zip").write_bytes(raw[:end])
    assert verify_lines(acr, tmp_path / "toc.zip") == [
        "the archive is truncated after MANIFEST.json (its table of contents is missing); copy "
        "the package again"]


def rebuilt(package, tmp_path, replace: dict, drop=()) -> Path:
    """A copy of the package with some entries replaced, added or dropped."""
    path = tmp_path / "rebuilt.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            if name not in drop and name not in replace:
                target.writestr(name, source.read(name))
        for name, data in replace.items():
            target.writestr(name, data)
    return path


def test_verify_finds_missing_and_extra_entries(acr, package, tmp_path):
    lines = verify_lines(acr, rebuilt(package, tmp_path, {"extra.txt": "sneaked in"},
                                      drop={RECORD}))
    assert sorted(lines) == ["extra.txt: in the zip but not in MANIFEST.json",
                             f"{RECORD}: listed in MANIFEST.json but missing from the zip"]
    (tmp_path / "not.zip").write_text("x")
    result = acr("export", "--verify", tmp_path / "not.zip")
    assert result.exit_code == 2 and "not a zip file" in result.stderr


def test_a_manifest_that_is_not_json_or_missing_is_named(acr, package, tmp_path):
    lines = verify_lines(acr, rebuilt(package, tmp_path, {"MANIFEST.json": "{'files': oops"}))
    assert lines == ["MANIFEST.json: not valid JSON (Expecting property name enclosed in double "
                     "quotes at line 1, column 2), so no entry can be checked"]
    lines = verify_lines(acr, rebuilt(package, tmp_path, {"MANIFEST.json": '{"files": [1]}'}))
    assert lines == ['MANIFEST.json: no "files" table, so no entry can be checked']
    lines = verify_lines(acr, rebuilt(package, tmp_path, {}, drop={"MANIFEST.json"}))
    assert lines == ["MANIFEST.json: missing, so no entry can be checked (not an acr export "
                     "package, or its manifest was removed)"]


def test_flac_samples_are_lossless_and_none_leaves_audio_out(acr, runs, tmp_path):
    run = runs / "grid/run1"
    assert acr("export", run, "-o", tmp_path / "f.zip", "--audio-format", "flac").exit_code == 0
    with zipfile.ZipFile(tmp_path / "f.zip") as archive:
        data = archive.read("grid/run1/samples/tiny-musicgen/hot/calm/0-0.flac")
    (tmp_path / "x.flac").write_bytes(data)
    flac, _ = sf.read(str(tmp_path / "x.flac"), dtype="int16")
    wav, _ = sf.read(str(run / "samples/tiny-musicgen/hot/calm/0-0.wav"), dtype="int16")
    assert np.array_equal(flac, wav)
    assert not [n for n in names(tmp_path / "f.zip") if n.endswith(".wav")]
    assert acr("export", run, "-o", tmp_path / "n.zip", "--samples", "none").exit_code == 0
    listing = names(tmp_path / "n.zip")
    assert not [n for n in listing if n.endswith((".wav", ".flac"))]
    assert "grid/run1/samples/tiny-musicgen/hot/calm/0-0.json" in listing


def test_float_samples_stay_wav_under_flac(acr, runs, tmp_path):
    """FLAC holds at most 24-bit integers: a float32 sample would lose bits, so it stays WAV."""
    run = tmp_path / "grid/run1"
    shutil.copytree(runs / "grid/run1", run, ignore=shutil.ignore_patterns("cache"))
    sample = run / "samples/tiny-musicgen/hot/calm/0-0.wav"
    audio, rate = sf.read(str(sample), dtype="float32")
    sf.write(str(sample), audio * 0.3 + 1e-7, rate, subtype="FLOAT")
    result = acr("export", run, "-o", tmp_path / "f.zip", "--audio-format", "flac")
    assert result.exit_code == 0, result.stderr
    assert "1 WAV(s) stay WAV: float and 32-bit samples do not fit FLAC losslessly" in \
        result.stderr
    with zipfile.ZipFile(tmp_path / "f.zip") as archive:
        kept = archive.read("grid/run1/samples/tiny-musicgen/hot/calm/0-0.wav")
        listing = archive.namelist()
        manifest = archive.read("grid/run1/experiment.json").decode()
    assert kept == sample.read_bytes()
    assert len([n for n in listing if n.endswith(".flac")]) == 3
    assert '"samples/tiny-musicgen/hot/calm/0-0.wav"' in manifest
    assert '"samples/tiny-musicgen/hot/calm/1-0.flac"' in manifest


TOKENS = ("hf_" + "A1b2C3d4" * 4, "sk-proj-" + "x9Y8z7W6" * 3, "ghp_" + "Q7" * 18)


def plant(run: Path, home: Path) -> str:
    """Tokens and home paths (this machine's and other users') in every text record of a run,
    and in the command line of its meta.json; returns what was planted."""
    planted = " ".join([*TOKENS, f"{home}/private/take.wav", "/root/private/take.wav",
                        "/home/alice/notes.txt"])
    for path in sorted(run.rglob("*")):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data = {**data, "planted": planted} if isinstance(data, dict) else \
                [*data, {"planted": planted}]
            path.write_text(json.dumps(data, indent=2))
        elif path.suffix in (".jsonl", ".yaml", ".csv", ".md"):
            line = {".jsonl": json.dumps({"event": "note", "text": planted}),
                    ".yaml": f"planted: {json.dumps(planted)}", ".csv": json.dumps(planted),
                    ".md": planted}[path.suffix]
            path.write_text(path.read_text() + line + "\n")
    meta = json.loads((run / "meta.json").read_text())
    meta["argv"] = ["/root/venv/bin/acr", "experiment", f"{home}/cfg dir/grid.yaml", "--prompt",
                    f"lofi beat, key {TOKENS[1]}", "--out", str(run)]
    (run / "meta.json").write_text(json.dumps(meta))
    return planted


def test_no_home_paths_or_tokens_anywhere_in_the_package(acr, runs, tmp_path, monkeypatch):
    home = tmp_path / "home"
    run = home / "study/run1"
    shutil.copytree(runs / "grid/run1", run)
    plant(run, home)
    monkeypatch.setenv("HOME", str(home))
    assert acr("export", run, "-o", tmp_path / "s.zip").exit_code == 0
    text_entries = 0
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        for name in archive.namelist():
            data = archive.read(name)
            for secret in [*TOKENS, str(home), "/root/", "/home/alice"]:
                assert secret.encode() not in data, (name, secret)
            if name.endswith((".json", ".jsonl", ".yaml", ".csv", ".md")) and \
                    name != "MANIFEST.json":
                text_entries += 1
                text = data.decode()
                assert "<redacted> <redacted> <redacted> ~/private/take.wav " \
                       "~/private/take.wav ~/notes.txt" in text or name == "README.md" \
                       or name.endswith("meta.json"), name
        readme = archive.read("README.md").decode()
    assert text_entries >= 12  # records, sample sidecars, analysis, README
    command = re.search(r"- command: `(.*)`", readme).group(1)
    assert command == ("acr experiment ~/'cfg dir/grid.yaml' --prompt 'lofi beat, key "
                       "<redacted>' --out grid/run1")
    assert shlex.split(command) == ["acr", "experiment", "~/cfg dir/grid.yaml", "--prompt",
                                    "lofi beat, key <redacted>", "--out", "grid/run1"]


FILE_SUFFIX = re.compile(r"\.(wav|flac|json|jsonl|csv|md|yaml|png|bin|txt)$", re.IGNORECASE)
PATH_KEYS = {"path", "dir", "file"}


def named_paths(name: str, text: str, prefixes: set[str]) -> list[tuple[str, str]]:
    """(key, path) for every path a package entry names: values under path-like keys, values
    ending in a file suffix, values inside a run of the package, and Markdown links."""
    found = []

    def take(key, value):
        if isinstance(value, dict):
            for inner, item in value.items():
                take(inner, item)
        elif isinstance(value, list):
            for item in value:
                take(key, item)
        elif isinstance(value, str) and " " not in value and (
                key in PATH_KEYS or FILE_SUFFIX.search(value)
                or any(value == p or value.startswith(p + "/") for p in prefixes)):
            found.append((key, value))

    if name.endswith(".json"):
        take(None, json.loads(text))
    elif name.endswith(".jsonl"):
        for line in text.splitlines():
            take(None, json.loads(line))
    elif name.endswith(".yaml"):
        take(None, yaml.safe_load(text))
    elif name.endswith(".csv"):
        for row in csv.DictReader(io.StringIO(text)):
            for key, value in row.items():
                take(key, value)
    elif name.endswith(".md"):
        found += [("link", target) for target in re.findall(r"\]\(([^)\s]+)\)", text)]
    return found


def test_every_path_a_flac_package_names_is_in_it(acr, runs, tmp_path):
    result = acr("export", runs / "grid/run1", runs / "ft/run2", "--include-model",
                 "--audio-format", "flac", "-o", tmp_path / "f.zip")
    assert result.exit_code == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "f.zip") as archive:
        listing = set(archive.namelist())
        texts = {name: archive.read(name).decode() for name in listing
                 if name.endswith((".json", ".jsonl", ".yaml", ".csv", ".md"))}
    prefixes = {"grid/run1", "ft/run2"}
    folders = {"/".join(n.split("/")[:i]) for n in listing for i in range(1, n.count("/") + 1)}
    followed, outside = 0, set()
    for name, text in texts.items():
        base = "/".join(name.split("/")[:2]) if name.split("/")[0] != name else ""
        for key, path in named_paths(name, text, prefixes):
            if path.startswith(("/", "~")):
                outside.add(key)  # the machine's files: the model's source, the training data
                continue
            # records name paths inside their run; Markdown links are relative to their file
            here = name.rsplit("/", 1)[0] if key == "link" and "/" in name else base
            candidates = {path, f"{here}/{path}".lstrip("/")}
            assert candidates & (listing | folders), (name, key, path)
            followed += 1
    assert followed > 15 and outside <= {"model_source", "data"}  # (analysis: 4 plots)
    assert "samples/tiny-musicgen/hot/calm/0-0.flac" in texts["grid/run1/experiment.json"]
    assert "\nsamples/tiny-musicgen/hot/calm/0-0.flac," in texts["grid/run1/analysis/metrics.csv"]


def test_runs_sit_under_their_name_and_run_folder(acr, runs, tmp_path):
    for parent in ("elsewhere", "other"):
        shutil.copytree(runs / "grid/run1", tmp_path / parent / "run1",
                        ignore=shutil.ignore_patterns("*.wav", "cache"))
    unnamed = tmp_path / "misc/take-3"
    shutil.copytree(runs / "grid/run1", unnamed, ignore=shutil.ignore_patterns("*.wav", "cache"))
    (unnamed / "config.yaml").write_text("model: tiny-musicgen\n")  # no name: the parent's
    result = acr("export", tmp_path / "elsewhere/run1", tmp_path / "other/run1", unnamed,
                 "--samples", "none", "-o", tmp_path / "l.zip")
    assert result.exit_code == 0, result.stderr
    listing = names(tmp_path / "l.zip")
    assert {"/".join(n.split("/")[:2]) for n in listing if n.count("/") >= 2} == \
        {"grid/run1", "grid/run1-2", "misc/take-3"}
    assert {"grid/run1/experiment.json", "grid/run1-2/experiment.json",
            "misc/take-3/experiment.json"} <= set(listing)
    result = acr("export", tmp_path / "elsewhere/run1", tmp_path / "elsewhere/../elsewhere/run1",
                 "-o", tmp_path / "twice.zip")
    assert result.exit_code == 2 and "given twice" in result.stderr


@pytest.mark.slow
def test_export_and_verify_stream_entries_through_bounded_memory(runs, tmp_path):
    from acr.commands.export import export_runs, verify

    run = tmp_path / "big/run1"
    shutil.copytree(runs / "grid/run1", run, ignore=shutil.ignore_patterns("cache"))
    noise = np.random.default_rng(0).integers(-3000, 3000, 24 << 20, dtype=np.int16)
    sf.write(str(run / "samples/tiny-musicgen/hot/calm/long.wav"), noise, 32000,
             subtype="PCM_16")  # 48 MB
    del noise
    peaks = {}
    tracemalloc.start()
    try:
        for label, step in [("wav", lambda: export_runs([run], tmp_path / "w.zip")),
                            ("verify", lambda: verify(tmp_path / "w.zip")),
                            ("flac", lambda: export_runs([run], tmp_path / "f.zip",
                                                         audio_format="flac"))]:
            tracemalloc.reset_peak()
            step()
            peaks[label] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert verify(tmp_path / "w.zip") == [] and verify(tmp_path / "f.zip") == []
    assert max(peaks.values()) < 12 << 20, peaks  # a quarter of the one big entry


@pytest.mark.slow
def test_several_runs_get_a_comparison_and_a_fine_tune_model_loads(acr, runs, tmp_path):
    result = acr("export", runs / "grid/run1", runs / "ft/run2", "--include-model",
                 "-o", tmp_path / "both.zip")
    assert result.exit_code == 0, result.stderr
    listing = names(tmp_path / "both.zip")
    assert "ft/run2/model/state_dict.bin" in listing and "ft/run2/history.csv" in listing
    assert not [n for n in listing if "checkpoints" in n]
    with zipfile.ZipFile(tmp_path / "both.zip") as archive:
        readme = archive.read("README.md").decode()
        archive.extractall(tmp_path / "elsewhere")
    assert "## Comparison" in readme and "| `grid/run1` | experiment |" in readme
    assert "| `ft/run2` | finetune |" in readme
    reproduce = readme[readme.index("## `ft/run2`"):]
    assert "```bash\nacr finetune ft/run2/config.yaml\n```" in reproduce
    assert (f"It reads files that are not in this package (paths as on the machine that ran "
            f"it):\n\n- `data: {runs / 'demo'}`: the training audio with its captions (6 audio "
            "files were used)") in reproduce
    assert "or add `--set data=PATH`" in reproduce
    assert acr("validate", tmp_path / "elsewhere/ft/run2/config.yaml", "--set",
               f"data={runs / 'demo'}").exit_code == 0  # the rerun the README suggests
    assert plain_audiocraft_generates(tmp_path / "elsewhere/ft/run2/model", 0.5) == \
        "(1, 1, 16000) 32000"
    plain = names(tmp_path / "plain.zip") if acr("export", runs / "ft/run2", "-o",
                                                 tmp_path / "plain.zip").exit_code == 0 else []
    assert plain and not [n for n in plain if "/model/" in n]  # only with --include-model
    with zipfile.ZipFile(tmp_path / "plain.zip") as archive:
        assert "The fine-tuned model is not included (export with `--include-model` to add " \
            "it)." in archive.read("README.md").decode()


def test_refusals(acr, runs, tmp_path):
    run = tmp_path / "copy/run"
    shutil.copytree(runs / "grid/run1", run)
    (run / "samples/outside.wav").symlink_to(tmp_path / "secret.wav")
    (tmp_path / "secret.wav").write_bytes(b"x")
    result = acr("export", run, "-o", tmp_path / "x.zip")
    assert result.exit_code == 2 and "outside the run folder" in result.stderr
    assert not (tmp_path / "x.zip").exists()
    (run / "samples/outside.wav").unlink()
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "failed", "error": "boom"}))
    result = acr("export", run, "-o", tmp_path / "x.zip")
    assert result.exit_code == 2 and "the run is failed (boom)" in result.stderr
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    result = acr("export", run, "-o", tmp_path / "x.zip")  # no process holds it: killed
    assert result.exit_code == 2 and "the run was killed (its meta.json says running; no " \
        "process holds it); finish or resume it first" in result.stderr
    lock = lock_run(run)
    try:
        result = acr("export", run, "-o", tmp_path / "x.zip")
        assert result.exit_code == 2 and "the run is running; finish" in result.stderr
    finally:
        lock.close()
    (run / "meta.json").write_text(json.dumps({**meta, "status": "failed", "error": "boom"}))
    assert acr("export", run, "-o", tmp_path / "x.zip", "--force").exit_code == 0
    result = acr("export", run, "-o", tmp_path / "x.zip")
    assert result.exit_code == 2 and "exists" in result.stderr
    assert acr("export", tmp_path, "-o", tmp_path / "y.zip").exit_code == 2  # not a run
    (run / "samples/broken.wav").write_bytes(b"RIFF not really")
    result = acr("export", run, "-o", tmp_path / "z.zip", "--audio-format", "flac", "--force")
    assert result.exit_code == 2 and f"{run / 'samples/broken.wav'}: cannot read it as audio" \
        in result.stderr and not (tmp_path / "z.zip").exists()
    (run / "meta.json").write_text("{not json")
    result = acr("export", run, "-o", tmp_path / "z.zip")
    assert result.exit_code == 2 and f"{run / 'meta.json'} is not valid JSON" in result.stderr
    assert acr("export").exit_code == 2
