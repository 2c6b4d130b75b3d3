"""`acr listen`: building blind tests, importing and serving answers, the run browser, the
analysis joined with the metrics, and the export of it all. Fast tests use a run folder of
synthetic clips with experiment sidecars; the slow ones a real tiny-musicgen experiment run.
Browser tests (headless Chromium) are in test_listen_browser.py."""
import http.client
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acr.commands.listen import build_test, import_responses, listening_summary, make_server
from acr.core import stats
from raters import answers
from synth import sine, tone, write

SETTINGS = ["baseline", "hot", "cool"]
PROMPTS = {"calm": ["soft piano", "quiet strings"], "loud": ["heavy drums", "brass hits"]}
RATE = 16000


def fake_run(root: Path, settings=SETTINGS, samples: int = 1) -> Path:
    """A run folder laid out like acr experiment's: one short tone per clip, with sidecars."""
    run = root / "run"
    number = 0
    for setting in settings:
        for prompt_set, prompts in PROMPTS.items():
            for index, prompt in enumerate(prompts):
                for sample in range(samples):
                    number += 1
                    path = run / "samples" / "tiny" / setting / prompt_set / f"{index}-{sample}.wav"
                    write(path, 0.3 * tone(110 * (1 + number % 7), 0.5, RATE), RATE, "PCM_16")
                    path.with_suffix(".json").write_text(json.dumps({
                        "model": "tiny", "parameter_set": setting, "prompt_set": prompt_set,
                        "prompt_index": index, "sample_index": sample, "prompt": prompt}))
    (run / "meta.json").write_text(json.dumps({"command": "experiment", "status": "completed"}))
    (run / "events.jsonl").write_text("")
    return run


def references(root: Path) -> Path:
    """References for every prompt: a 1 kHz tone plus a 6 kHz tone (the anchor removes it)."""
    folder = root / "references"
    for prompt_set, prompts in PROMPTS.items():
        for index in range(len(prompts)):
            audio = 0.3 * sine(1000, 0.5, RATE) + 0.3 * sine(6000, 0.5, RATE)
            write(folder / prompt_set / f"{index}.wav", audio, RATE, "PCM_16")
    return folder


def design_of(folder: Path) -> dict:
    return json.loads((folder / "design.json").read_text())


@pytest.fixture
def run(tmp_path):
    return fake_run(tmp_path)


# building

def test_mos_design_balances_the_clips_over_rater_slots(run):
    folder = build_test(run, "mos", per_rater=5, raters=12, seed=7)
    assert sorted(p.name for p in folder.iterdir()) == ["audio", "design.json", "index.html",
                                                        "responses"]
    design = design_of(folder)
    assert len(design["items"]) == 12 and len(design["slots"]) == 12
    counts = {item["id"]: 0 for item in design["items"]}
    for trials in design["slots"]:
        firsts = [t for t in trials if not t["repeat_of"]]
        repeats = [t for t in trials if t["repeat_of"]]
        assert len(firsts) == 5 and len(repeats) == 1  # a tenth of the trials, at least one
        assert len({t["item"] for t in firsts}) == 5  # no clip twice but the check
        original = next(t for t in trials if t["id"] == repeats[0]["repeat_of"])
        assert original["item"] == repeats[0]["item"]
        assert trials.index(repeats[0]) >= trials.index(original) + 2  # not back to back
        assert [t["id"] for t in trials] == [f"s{design['slots'].index(trials)}t{i + 1}"
                                             for i in range(6)]  # repeats look like any trial
        for trial in firsts:
            counts[trial["item"]] += 1
    assert sorted(set(counts.values())) == [5]  # 12 slots x 5 trials over 12 clips: 5 each
    clip = design["clips"][design["items"][0]["clips"][0]]
    assert clip["setting"] in SETTINGS and (run / clip["path"]).is_file()
    assert (folder / clip["src"]).read_bytes() == (run / clip["path"]).read_bytes()
    event = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    assert (event["event"], event["design"], event["seed"], event["slots"]) == \
        ("listen.build", "mos", 7, 12)


def test_ab_pairs_are_balanced_and_sides_random(run):
    folder = build_test(run, "ab", raters=6, seed=3)
    design = design_of(folder)
    pairs = [tuple(sorted(design["clips"][c]["setting"] for c in item["clips"]))
             for item in design["items"]]
    assert len(pairs) == 4 * 3  # every prompt, every pair of settings
    assert {p: pairs.count(p) for p in set(pairs)} == {("baseline", "hot"): 4,
                                                       ("baseline", "cool"): 4,
                                                       ("cool", "hot"): 4}
    items = {i["id"]: i for i in design["items"]}
    swapped = [t["clips"][0]["clip"] != items[t["item"]]["clips"][0]
               for trials in design["slots"] for t in trials if not t["repeat_of"]]
    assert 0.3 < np.mean(swapped) < 0.7  # A/B sides randomised
    for trials in design["slots"]:
        for repeat in (t for t in trials if t["repeat_of"]):
            first = next(t for t in trials if t["id"] == repeat["repeat_of"])
            assert [c["clip"] for c in repeat["clips"]] == [c["clip"] for c in first["clips"]][::-1]


def test_builds_are_reproducible_from_the_seed_and_blind(tmp_path):
    one, two = fake_run(tmp_path / "a"), fake_run(tmp_path / "b")
    a, b = build_test(one, "mushra", seed=11), build_test(two, "mushra", seed=11)
    c = build_test(one, "mushra", seed=12, name="other")
    assert (a / "index.html").read_bytes() == (b / "index.html").read_bytes()
    assert design_of(a)["slots"] == design_of(b)["slots"] and design_of(a)["id"] == \
        design_of(b)["id"]
    assert design_of(a)["slots"] != design_of(c)["slots"]
    page = (a / "index.html").read_text()
    for secret in SETTINGS + ["samples/", "tiny", "0-0", "calm", "loud"]:
        assert secret not in page, secret
    assert "soft piano" in page  # the prompt is shown
    names = sorted(p.name for p in (a / "audio").iterdir())
    assert len(names) == 12 and all(len(Path(n).stem) == 12 for n in names)


def test_mushra_reference_hidden_copy_and_low_pass_anchor(run, tmp_path):
    folder = build_test(run, "mushra", seed=1, reference=references(tmp_path), raters=2)
    design = design_of(folder)
    item = design["items"][0]
    roles = sorted(design["clips"][c]["role"] for c in item["clips"])
    assert roles == ["anchor", "hidden_reference", "sample", "sample", "sample"]
    open_ref = design["clips"][item["reference"]]
    hidden = next(design["clips"][c] for c in item["clips"]
                  if design["clips"][c]["role"] == "hidden_reference")
    anchor = next(design["clips"][c] for c in item["clips"]
                  if design["clips"][c]["role"] == "anchor")
    assert open_ref["src"] != hidden["src"]  # the same audio under two names
    assert (folder / open_ref["src"]).read_bytes() == (folder / hidden["src"]).read_bytes()
    ref, _ = sf.read(folder / hidden["src"])
    low, _ = sf.read(folder / anchor["src"])

    def level(x, freq):  # amplitude of a tone, by projection
        t = np.arange(len(x)) / RATE
        return 2 * abs(np.mean(x * np.exp(-2j * np.pi * freq * t)))
    assert level(low, 1000) == pytest.approx(level(ref, 1000), rel=0.02)  # pass band kept
    assert level(low, 6000) < 0.001 * level(ref, 6000)  # 6 kHz: 60 dB down
    assert all(not t["repeat_of"] for s in design["slots"] for t in s)  # the reference checks
    assert design["reference_min"] == 90 and hidden["reference"] == f"{item['block']}.wav"
    moved = tmp_path / "elsewhere"  # the same references elsewhere: the same test
    (tmp_path / "references").rename(moved)
    again = build_test(fake_run(tmp_path / "b"), "mushra", seed=1, reference=moved, raters=2)
    assert design_of(again)["id"] == design["id"]


@pytest.mark.slow
def test_build_refusals_write_nothing(acr, run, tmp_path):
    cases = [(["--design", "abx"], "--design abx: unknown"),
             (["--settings", "baseline,warm"], "unknown setting(s) warm; the run has baseline, "
                                               "cool, hot"),
             (["--design", "ab", "--settings", "hot"], "--design ab compares settings"),
             (["--per-rater", "0"], "--per-rater 0"),
             (["--raters", "0"], "--raters 0"),
             (["--name", "../x"], "--name ../x"),
             (["--name", "browse"], "--name browse"),
             (["--reference", str(tmp_path)], "--reference goes with --design mushra"),
             (["--design", "mushra", "--reference", str(tmp_path / "none")], "no such folder"),
             (["--design", "mushra", "--reference", str(tmp_path)],
              f"expected {tmp_path}/calm/0.wav")]
    for args, message in cases:
        result = acr("listen", "build", run, *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert not (run / "listening").exists() or not any((run / "listening").iterdir())
    assert acr("listen", "build", run, "--seed", "1").exit_code == 0
    again = acr("listen", "build", run)
    assert again.exit_code == 2 and "exists; a test is never rebuilt" in again.stderr
    missing = acr("listen", "build", tmp_path / "nothing")
    assert missing.exit_code == 2 and "no such folder" in missing.stderr


# answers: import

TASTE = {"baseline": 4, "hot": 2, "cool": 3}


def test_import_checks_and_stores_answers(acr, run, tmp_path):
    folder = build_test(run, "mos", per_rater=4, raters=3, seed=2)
    good = [tmp_path / f"r{slot}.json" for slot in range(2)]
    for slot, path in enumerate(good):
        path.write_text(json.dumps(answers(folder, slot, f"R{slot}", TASTE)))
    result = acr("listen", "import", run, *good)
    assert result.exit_code == 0, result.stderr
    stored = sorted((folder / "responses").iterdir())
    assert [p.name[:8] for p in stored] == ["slot000-", "slot001-"]
    record = json.loads(stored[0].read_text())
    assert record["rater"] == "R0" and record["via"] == "import" and len(record["trials"]) == 5
    again = acr("listen", "import", run, good[0])
    assert again.exit_code == 0 and "already imported" in again.stderr
    assert len(list((folder / "responses").iterdir())) == 2


def _broken(folder, change):
    data = answers(folder, 0, "R0", TASTE)
    change(data)
    return data


def test_import_refuses_bad_answers_naming_each_problem(acr, run, tmp_path):
    folder = build_test(run, "mos", per_rater=4, raters=2, seed=2)
    first = design_of(folder)["slots"][0][0]["id"]

    def set_answer(key, value):
        return lambda d: d["trials"][0]["answer"].__setitem__(key, value)
    cases = {
        "range": (set_answer("quality", 7), f"trial {first}: quality must be an integer 1-5, "
                                            "got 7"),
        "float": (set_answer("quality", 3.5), "quality must be an integer 1-5, got 3.5"),
        "unknown": (lambda d: d["trials"][0].__setitem__("id", "s9t9"),
                    'trial "s9t9": not a trial of slot 0'),
        "missing": (lambda d: d["trials"].pop(), "1 trial(s) of slot 0 not answered"),
        "twice": (lambda d: d["trials"].append(d["trials"][0]), f"trial {first}: answered twice"),
        "unplayed": (lambda d: d["trials"][0]["played_to_end"].__setitem__("A", False),
                     "must have been played to the end"),
        "slot": (lambda d: d.__setitem__("slot", 5), "slot 5: the test has slots 0-1"),
        "design": (lambda d: d.__setitem__("design_id", "0" * 16), "the page was built for "
                                                                  "another test"),
        "format": (lambda d: d.__setitem__("format", "x"), 'format "x", not '
                                                          "acr-listening-response/1"),
        "rater": (lambda d: d.__setitem__("rater", "a\nb"), "rater must be a printable name"),
    }
    good = tmp_path / "good.json"
    good.write_text(json.dumps(answers(folder, 1, "R1", TASTE)))
    for name, (change, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(_broken(folder, change)))
        result = acr("listen", "import", run, good, path)
        assert result.exit_code == 2, name
        assert f"{path}: " in result.stderr and message in result.stderr, (name, result.stderr)
        assert "nothing imported" in result.stderr
        assert not list((folder / "responses").iterdir())  # not even the good file
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": ')
    result = acr("listen", "import", run, bad_json)
    assert result.exit_code == 2 and "malformed JSON" in result.stderr
    huge = tmp_path / "huge.json"
    huge.write_text(" " * 1_000_001)
    result = acr("listen", "import", run, huge)
    assert result.exit_code == 2 and "more than answers ever take" in result.stderr
    result = acr("listen", "import", run, tmp_path / "absent.json")
    assert result.exit_code == 2 and "no such file" in result.stderr


# answers: serve

def _request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Location"), data


@pytest.fixture
def served(run):
    folder = build_test(run, "ab", per_rater=3, raters=4, seed=5)
    server = make_server(run, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_serve_hands_out_slots_and_serves_only_the_page_and_its_audio(served):
    folder, port = served
    locations = [_request(port, "GET", "/")[1] for _ in range(5)]
    assert locations == [f"/index.html?slot={i}" for i in (0, 1, 2, 3, 0)]
    status, _, page = _request(port, "GET", "/index.html?slot=1")
    assert status == 200 and page == (folder / "index.html").read_bytes()
    audio = sorted((folder / "audio").iterdir())[0]
    status, _, data = _request(port, "GET", f"/audio/{audio.name}")
    assert status == 200 and data == audio.read_bytes()
    for path in ["/design.json", "/responses/", "/../design.json", "/audio/../design.json",
                 "/audio/%2e%2e/design.json", "/%2e%2e/%2e%2e/meta.json", "//etc/passwd",
                 "/audio/", "/index.html/../design.json"]:
        status, _, body = _request(port, "GET", path)
        assert status == 404, path
    assert _request(port, "PUT", "/submit", b"{}")[0] == 405
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # no Content-Length
        raw.sendall(b"POST /submit HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.0 411")


def test_serve_checks_submissions_and_saves_them(served):
    folder, port = served
    good = json.dumps(answers(folder, 1, "R1", TASTE)).encode()
    status, _, body = _request(port, "POST", "/submit", b'{"format":', {"Content-Length": "10"})
    assert status == 400 and b"malformed JSON" in body
    status, _, body = _request(port, "POST", "/submit", b"{}",
                               {"Content-Length": str(5_000_000)})
    assert status == 413
    bad = answers(folder, 1, "R1", TASTE)
    bad["trials"][0]["answer"]["choice"] = "C"
    status, _, body = _request(port, "POST", "/submit", json.dumps(bad).encode())
    assert status == 422 and b"choice must be one of A, B, none" in body
    assert not list((folder / "responses").iterdir())
    status, _, body = _request(port, "POST", "/submit", good)
    assert status == 201 and json.loads(body)["message"] == "Saved. Thank you!"
    status, _, body = _request(port, "POST", "/submit", good)
    assert status == 200 and b"already saved" in body
    assert len(list((folder / "responses").iterdir())) == 1

    # raters submitting at once: every file lands, none overwritten
    bodies = [json.dumps(answers(folder, slot % 4, f"P{slot}", TASTE)).encode()
              for slot in range(8)]
    results = []
    threads = [threading.Thread(target=lambda b=b: results.append(
        _request(port, "POST", "/submit", b)[0])) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] * 8
    stored = [json.loads(p.read_text()) for p in (folder / "responses").iterdir()]
    assert sorted(s["rater"] for s in stored) == ["P0", "P1", "P2", "P3", "P4", "P5", "P6",
                                                  "P7", "R1"]
    assert not [p for p in (folder / "responses").iterdir() if p.name.startswith(".")]


def test_serve_refusals(acr, run):
    result = acr("listen", "serve", run)
    assert result.exit_code == 2 and "no listening test built" in result.stderr
    build_test(run, "mos", seed=1, name="only")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = acr("listen", "serve", run, "--port", taken.getsockname()[1])
    assert result.exit_code == 2 and "cannot listen there" in result.stderr
    build_test(run, "mos", seed=1)
    build_test(run, "ab", seed=1)
    result = acr("listen", "serve", run)
    assert result.exit_code == 2 and "several listening tests (ab, mos, only); choose one with " \
        "--name" in result.stderr
    result = acr("listen", "serve", run, "--name", "mushra")
    assert result.exit_code == 2 and "no listening test of that name" in result.stderr


# analysis

def _rows(run: Path, metric) -> list[dict]:
    """metrics.csv-like rows: `metric(setting, prompt index)` as `made_up`, plus a constant."""
    rows = []
    for path in sorted((run / "samples").rglob("*.wav")):
        side = json.loads(path.with_suffix(".json").read_text())
        rows.append({"path": path.relative_to(run).as_posix(), "prompt": side["prompt"],
                     "made_up": str(metric(side["parameter_set"], side["prompt_index"])),
                     "constant": "1.0", "key": "C major"})
    return rows


@pytest.mark.slow
def test_mos_analysis_screens_raters_and_matches_hand_computed_means(run, tmp_path):
    folder = build_test(run, "mos", raters=4, seed=4)  # every rater rates every clip
    for slot in range(3):
        data = answers(folder, slot, f"R{slot}", TASTE)
        import_responses(run, [_save(tmp_path, data)])
    import_responses(run, [_save(tmp_path, answers(folder, 3, "careless", TASTE,
                                                   careless=True))])
    rows = _rows(run, lambda s, i: {"baseline": 10, "hot": 1, "cool": 5}[s] + i * 0.1)
    result = listening_summary(run, rows, tmp_path / "plots")
    mos = result.summary["mos"]
    assert mos["excluded"] == ["careless"] and mos["raters"] == 3
    assert [s["failed"] for s in mos["screening"]] == [0, 0, 0, 1]
    for setting, taste in TASTE.items():  # noise-free raters: each setting's taste exactly
        assert mos["quality"]["by_prompt"][setting]["mean"] == taste
        assert mos["quality"]["by_prompt"][setting]["n"] == 4  # prompts
        assert mos["quality"]["by_rater"][setting]["n"] == 3  # raters
        assert mos["quality"]["ratings"][setting] == 12
    assert mos["agreement"]["alpha"] == pytest.approx(1.0)  # identical raters
    assert mos["quality"]["tests"]["omnibus"]["test"] == "friedman"
    assert mos["quality"]["tests"]["omnibus"]["kendall_w"] == pytest.approx(1.0)
    # the made-up metric orders clips as the raters do (ties within a setting aside)
    assert mos["human_vs_metrics"]["quality"]["made_up"]["rho"] == pytest.approx(
        stats.spearman([TASTE[s] for s in _settings(rows)], [float(r["made_up"]) for r in rows]
                       )["rho"])
    assert mos["human_vs_metrics"]["quality"]["made_up"]["rho"] > 0.9
    assert mos["human_vs_metrics"]["quality"]["constant"]["rho"] is None
    assert "key" not in mos["human_vs_metrics"]["quality"]
    text = "\n".join(result.report_lines)
    assert "## Listening tests" in text and "Excluded: careless" in text
    assert "Krippendorff's alpha (ordinal) = 1.000" in text
    assert {p.name for p in result.plots} == {"listening-mos-scores.png",
                                               "listening-mos-quality-vs-metrics.png",
                                               "listening-mos-match-vs-metrics.png"}
    assert all(p.stat().st_size > 1000 for p in result.plots)


def _settings(rows):
    return [r["path"].split("/")[2] for r in rows]


def _save(tmp_path, data):
    path = tmp_path / f"answers-{data['test']}-{data['slot']}-{data['rater']}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_ab_analysis_win_matrix_and_bradley_terry(run, tmp_path):
    folder = build_test(run, "ab", raters=2, seed=8)
    for slot in range(2):
        import_responses(run, [_save(tmp_path, answers(folder, slot, f"R{slot}", TASTE))])
    # a third rater with the opposite taste on hot vs cool makes the MLE exist
    import_responses(run, [_save(tmp_path, answers(folder, 0, "R2", {"baseline": 4, "hot": 3,
                                                                     "cool": 2}))])
    result = listening_summary(run, _rows(run, lambda s, i: TASTE[s]), tmp_path / "plots")
    ab = result.summary["ab"]["ab"]
    index = {s: i for i, s in enumerate(ab["settings"])}
    wins = np.array(ab["wins"])
    # every rater saw all 12 pairs once: baseline always wins (3 x 4 each); cool beat hot 8 : 4
    assert wins[index["baseline"], index["hot"]] == 12 and wins[index["hot"],
                                                                index["baseline"]] == 0
    assert wins[index["cool"], index["hot"]] == 8 and wins[index["hot"], index["cool"]] == 4
    assert ab["bt_prior"] == 0.5  # baseline never lost: the plain MLE does not exist
    expected = stats.bradley_terry(wins, prior=0.5)
    for setting, i in index.items():
        assert ab["bradley_terry"][setting]["strength"] == pytest.approx(expected[i])
    bt = ab["bradley_terry"]
    assert bt["baseline"]["strength"] > bt["cool"]["strength"] > bt["hot"]["strength"]
    assert bt["baseline"]["win_share"] == 1.0
    pair = next(p for p in ab["pairs"] if {p["a"], p["b"]} == {"baseline", "hot"})
    assert pair["ties"] == 0 and max(pair["a_wins"], pair["b_wins"]) == 12
    assert pair["p"] == pytest.approx(2 * 0.5 ** 12)  # two-sided sign test, 12 : 0
    assert result.summary["ab"]["agreement"]["alpha"] is not None
    win_rate = result.summary["ab"]["human_vs_metrics"]["win_rate"]["made_up"]
    assert win_rate["rho"] > 0.9 and win_rate["n"] == 12


def test_mushra_analysis_hidden_reference_screening(run, tmp_path):
    taste = {"baseline": 80, "hot": 30, "cool": 55}
    folder = build_test(run, "mushra", raters=3, seed=9, reference=references(tmp_path))
    for slot in range(2):
        import_responses(run, [_save(tmp_path, answers(folder, slot, f"R{slot}", taste))])
    import_responses(run, [_save(tmp_path, answers(folder, 2, "sloppy", taste, careless=True))])
    result = listening_summary(run, _rows(run, lambda s, i: taste[s]), tmp_path / "plots")
    mushra = result.summary["mushra"]
    assert mushra["excluded"] == ["sloppy"]
    assert mushra["screening"][0]["checks"] == 4 and mushra["screening"][2]["failed"] == 4
    score = mushra["score"]
    assert score["by_prompt"]["hidden_reference"]["mean"] == 96
    assert score["by_prompt"]["anchor"]["mean"] == 12
    assert score["by_prompt"]["cool"]["mean"] == 55
    assert score["tests"]["settings"] == sorted(SETTINGS)  # reference and anchor are not tested
    assert mushra["agreement"]["units"] == 12  # the run's clips, not references or anchors


def test_no_answers_no_listening_section(run, tmp_path):
    assert listening_summary(run, [], tmp_path) is None
    folder = build_test(run, "mos", seed=1)
    assert listening_summary(run, [], tmp_path) is None
    import_responses(run, [_save(tmp_path, answers(folder, 0, "R0", TASTE))])
    assert listening_summary(run, [], tmp_path) is not None
    (folder / "design.json").write_text("{broken")  # analyze goes on without the tests
    assert listening_summary(run, [], tmp_path) is None
