"""`acr listen` on a real tiny-musicgen experiment run: every design built, answered in headless
Chromium (from file:// and through `acr listen serve`), imported, analysed by `acr analyze` next
to the metrics, browsed, and exported. Browser tests skip without Chromium; set
ACR_SCREENSHOTS=docs to refresh the README's screenshots of each design's first trial."""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from browser import chromium_missing, start_browser, stop_browser, wait_for
from raters import answers
from synth import sine, write

GRID = """\
name: listen
model: tiny-musicgen
device: cpu
seed: 3
samples_per_prompt: 1
batch_size: 3
defaults: {duration: 1.0}
prompt_sets:
  calm: [soft piano, quiet strings]
  loud: [heavy drums]
parameter_sets:
  baseline: {}
  hot: {temperature: 1.5}
  cool: {temperature: 0.7}
analyze: false
"""
SETTINGS = ["baseline", "cool", "hot"]
MOS_TASTE = {"baseline": 5, "cool": 3, "hot": 2}
MUSHRA_TASTE = {"baseline": 80, "cool": 55, "hot": 30, "hidden_reference": 96, "anchor": 12}
needs_chromium = pytest.mark.skipif(chromium_missing() is not None,
                                    reason=chromium_missing() or "")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """9 one-second clips: 3 parameter sets x 3 prompts, and references for MUSHRA."""
    from typer.testing import CliRunner

    from acr.cli import app

    root = tmp_path_factory.mktemp("listen")
    (root / "grid.yaml").write_text(GRID)
    result = CliRunner().invoke(app, ["experiment", str(root / "grid.yaml"), "--out",
                                      str(root / "run")])
    assert result.exit_code == 0, result.stderr
    for prompt_set, count in (("calm", 2), ("loud", 1)):
        for index in range(count):
            write(root / "references" / prompt_set / f"{index}.wav",
                  0.3 * sine(440 * (index + 1), 1.0, 32000) + 0.2 * sine(7000, 1.0, 32000),
                  32000, "PCM_16")
    return root


@pytest.fixture
def run(tiny_run, tmp_path):
    shutil.copytree(tiny_run / "run", tmp_path / "run")
    return tmp_path / "run"


def build(acr, run, design, *args):
    result = acr("listen", "build", run, "--design", design, "--seed", "5", *args)
    assert result.exit_code == 0, result.stderr
    return run / "listening" / design


@pytest.mark.slow
def test_build_answer_analyse_browse_and_export(acr, run, tiny_run, tmp_path):
    folders = {"mos": build(acr, run, "mos", "--raters", "3", "--per-rater", "6"),
               "ab": build(acr, run, "ab", "--raters", "3"),
               "mushra": build(acr, run, "mushra", "--raters", "3", "--reference",
                               tiny_run / "references")}
    files = []
    for design, folder in folders.items():
        taste = MOS_TASTE if design != "mushra" else MUSHRA_TASTE
        for slot in range(3):
            path = tmp_path / f"{design}-{slot}.json"
            path.write_text(json.dumps(answers(folder, slot, f"R{slot}", taste, noise=0.5,
                                               seed=slot)))
            files.append(path)
    result = acr("listen", "import", run, *files)
    assert result.exit_code == 0, result.stderr
    assert "imported 9 answer file(s)" in result.stdout

    result = acr("analyze", run, "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    analysis = run / "analysis"
    with open(analysis / "metrics.csv") as fh:
        paths = [line.split(",")[0] for line in fh.read().splitlines()[1:]]
    assert len(paths) == 9 and all(p.startswith("samples/") for p in paths)  # no test copies
    summary = json.loads((analysis / "summary.json").read_text())
    listening = summary["listening"]
    assert sorted(listening) == ["ab", "mos", "mushra"]
    assert listening["mos"]["raters"] == 3 and listening["mos"]["excluded"] == []
    assert listening["mos"]["quality"]["by_prompt"]["baseline"]["mean"] > \
        listening["mos"]["quality"]["by_prompt"]["hot"]["mean"]
    assert listening["ab"]["ab"]["bradley_terry"]["baseline"]["strength"] > \
        listening["ab"]["ab"]["bradley_terry"]["hot"]["strength"]
    assert listening["mushra"]["score"]["by_prompt"]["hidden_reference"]["mean"] == 96
    for design in ("mos", "ab", "mushra"):
        correlations = next(iter(listening[design]["human_vs_metrics"].values()))
        assert {"loudness_lufs", "spectral_centroid_hz", "novelty"} <= set(correlations)
        assert correlations["loudness_lufs"]["n"] == 9
        assert listening[design]["agreement"]["level"] == "ordinal"
    report = (analysis / "report.md").read_text()
    assert "## Listening tests" in report and "Krippendorff's alpha (ordinal)" in report
    assert "Bradley-Terry strengths" in report and "Human quality vs metrics" in report
    for plot in ("listening-mos-scores.png", "listening-ab-preference.png",
                 "listening-mushra-scores.png", "listening-mos-quality-vs-metrics.png"):
        assert (analysis / "plots" / plot).stat().st_size > 1000
        assert f"plots/{plot}" in report

    # the run browser, with the metrics beside every clip
    result = acr("listen", "browse", run)
    assert result.exit_code == 0, result.stderr
    page = (run / "listening" / "browse" / "index.html").read_text()
    for path in paths:
        assert f'src="../../{path}"' in page
    assert len(list((run / "listening" / "browse" / "spectrograms").glob("*.png"))) == 9
    assert "integrated loudness (LUFS)" in page and "No metrics yet" not in page
    assert all(setting in page for setting in SETTINGS)  # not blind, by design

    # the package holds the pages, their audio (as WAV, whatever --audio-format) and answers
    result = acr("export", run, "-o", tmp_path / "package.zip", "--audio-format", "flac")
    assert result.exit_code == 0, result.stderr
    assert acr("export", "--verify", tmp_path / "package.zip").exit_code == 0
    with zipfile.ZipFile(tmp_path / "package.zip") as archive:
        archive.extractall(tmp_path / "unzipped")
    [prefix] = [p for p in (tmp_path / "unzipped").glob("*/*") if p.is_dir()]
    for design in ("mos", "ab", "mushra"):
        test = prefix / "listening" / design
        sources = re.findall(r'"(audio/[0-9a-f]{12}\.wav)"', (test / "index.html").read_text())
        assert sources and all((test / src).is_file() for src in sources)
        assert len(list((test / "responses").glob("*.json"))) == 3
        assert (test / "design.json").is_file()
    assert (prefix / "listening" / "browse" / "index.html").is_file()
    assert (prefix / "samples" / "tiny-musicgen" / "hot" / "calm" / "0-0.flac").is_file()


# in the browser

def _play_all(driver, By):
    """Click every player and wait for its clip to play to the end."""
    for button in driver.find_elements(By.CSS_SELECTOR, "button.play"):
        button.click()
        if button.get_attribute("data-label") == "reference":
            wait_for(lambda: "playing" in (button.get_attribute("class") or ""))
            wait_for(lambda: "playing" not in (button.get_attribute("class") or ""))
        else:
            wait_for(lambda: "done" in (button.get_attribute("class") or ""))


def _slider_to(slider, value, Keys):
    keys = [Keys.HOME] + [Keys.PAGE_UP] * (value // 10) + [Keys.ARROW_RIGHT] * (value % 10)
    slider.send_keys(*keys)


def answer_page(driver, design: dict, slot: int, screenshot: Path | None = None) -> list:
    """Play and answer every trial of `slot` as the taste says; returns the intended answers."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.ID, "rater").send_keys(f"browser-{slot}")
    driver.find_element(By.ID, "start").click()
    intended = []
    for number, trial in enumerate(design["slots"][slot]):
        wait_for(lambda: driver.find_element(By.ID, "progress").text ==
                 f"Trial {number + 1} of {len(design['slots'][slot])}")
        setting = {c["label"]: design["clips"][c["clip"]]["setting"] for c in trial["clips"]}
        next_button = driver.find_element(By.ID, "next")
        assert not next_button.is_enabled()
        if design["design"] == "mushra":
            gates = driver.find_elements(By.CSS_SELECTOR, "input[type=range]")
        else:
            gates = driver.find_elements(By.CSS_SELECTOR, "input[type=radio]")
        if number == 0:  # a rating before listening is refused
            assert gates and not any(g.is_enabled() for g in gates)
            radios = driver.find_elements(By.CSS_SELECTOR, "input[type=radio]")
            if radios:
                try:
                    radios[0].click()
                except Exception:  # refused as not interactable: as good
                    pass
                assert not any(r.is_selected() for r in radios)
        _play_all(driver, By)
        if design["design"] == "mos":
            quality = MOS_TASTE[setting["A"]]
            driver.find_element(By.CSS_SELECTOR, f"input[name=quality][value='{quality}']").click()
            answer = {"quality": quality}
            if driver.find_elements(By.CSS_SELECTOR, "input[name=match]"):
                driver.find_element(By.CSS_SELECTOR, "input[name=match][value='4']").click()
                answer["match"] = 4
        elif design["design"] == "ab":
            a, b = MOS_TASTE[setting["A"]], MOS_TASTE[setting["B"]]
            choice = "A" if a > b else "B"
            driver.find_element(By.CSS_SELECTOR, f"input[name=choice][value='{choice}']").click()
            answer = {"choice": choice}
        else:
            scores = {}
            for slider in driver.find_elements(By.CSS_SELECTOR, "input[type=range]"):
                label = slider.get_attribute("data-label")
                scores[label] = MUSHRA_TASTE[setting[label]]
                _slider_to(slider, scores[label], Keys)
            answer = {"scores": scores}
        intended.append({"id": trial["id"], "answer": answer})
        wait_for(lambda: next_button.is_enabled())
        if number == 0 and screenshot is not None:
            driver.find_element(By.TAG_NAME, "main").screenshot(str(screenshot))
        next_button.click()
    wait_for(lambda: driver.find_element(By.ID, "done").is_displayed())
    return intended


def _save_screenshot(source: Path, name: str) -> None:
    target = os.environ.get("ACR_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, Path(target) / name)


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize("kind", ["mos", "ab", "mushra"])
def test_each_design_answered_in_chromium_from_file_and_imported(acr, run, tiny_run, tmp_path,
                                                                 kind):
    from selenium.webdriver.common.by import By

    extra = ["--reference", tiny_run / "references"] if kind == "mushra" else []
    folder = build(acr, run, kind, "--raters", "2", "--per-rater", "2", *extra)
    design = json.loads((folder / "design.json").read_text())
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_browser(downloads)
    try:
        driver.get((folder / "index.html").as_uri() + "?slot=1")
        dom = driver.page_source
        for secret in SETTINGS + ["tiny-musicgen", "samples/", "calm", "loud", "0-0"]:
            assert secret not in dom, secret
        intended = answer_page(driver, design, 1, tmp_path / "first-trial.png")
        _save_screenshot(tmp_path / "first-trial.png", f"listen-{kind}.png")
        assert not driver.find_element(By.ID, "submit").is_displayed()  # file://: download only
        driver.find_element(By.ID, "download").click()
        [downloaded] = wait_for(lambda: [p for p in downloads.glob("*.json")])
    finally:
        stop_browser(driver)
    assert downloaded.name == f"answers-{kind}-slot1.json"
    data = json.loads(downloaded.read_text())
    assert data["slot"] == 1 and data["rater"] == "browser-1"
    assert [{"id": t["id"], "answer": t["answer"]} for t in data["trials"]] == intended
    for trial in data["trials"]:
        assert all(trial["played_to_end"].values()) and all(v == 1 for k, v in
                                                              trial["plays"].items())
        assert 0 < trial["time_ms"] < 120000
    result = acr("listen", "import", run, downloaded)
    assert result.exit_code == 0, result.stderr
    assert len(list((folder / "responses").glob("*.json"))) == 1


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_serve_two_raters_at_once_then_bad_submissions_are_refused(acr, run, tmp_path):
    from selenium.webdriver.common.by import By

    folder = build(acr, run, "mos", "--raters", "2", "--per-rater", "2")
    design = json.loads((folder / "design.json").read_text())
    server = subprocess.Popen([sys.executable, "-m", "acr", "listen", "serve", str(run),
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        line = server.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        outcomes, errors = {}, []

        def rater(number):
            driver = start_browser(tmp_path / f"dl{number}")
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                slot = int(re.search(r"slot=(\d)", driver.current_url).group(1))
                answer_page(driver, design, slot)
                submit = driver.find_element(By.ID, "submit")
                assert submit.is_displayed()
                submit.click()
                outcomes[number] = wait_for(lambda: driver.find_element(By.ID, "status").text)
            except Exception as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                stop_browser(driver)

        threads = [threading.Thread(target=rater, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        assert not errors, errors
        assert outcomes == {0: "Saved. Thank you!", 1: "Saved. Thank you!"}
        stored = sorted(json.loads(p.read_text())["slot"] for p in
                        (folder / "responses").glob("*.json"))
        assert stored == [0, 1]  # both raters, each in their own slot and file

        def post(body, length=None):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("POST", "/submit", body=body,
                               headers={"Content-Length": str(length or len(body))})
            response = connection.getresponse()
            text = response.read()
            connection.close()
            return response.status, text
        assert post(b"{not json")[0] == 400
        assert post(b"x" * 100, length=50_000_000)[0] == 413
        assert post(json.dumps({"format": "acr-listening-response/1"}).encode())[0] == 422
        assert len(list((folder / "responses").glob("*.json"))) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
        server.stderr.close()


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_run_browser_loads_its_players_and_spectrograms(acr, run, tmp_path):
    assert acr("listen", "browse", run).exit_code == 0
    driver = start_browser(tmp_path)
    try:
        driver.get((run / "listening" / "browse" / "index.html").as_uri())
        assert len(driver.find_elements("css selector", "audio")) == 9
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
        assert len(widths) == 9 and min(widths) > 100
        duration = driver.execute_async_script(
            "const done = arguments[0]; const a = document.querySelector('audio');"
            "a.addEventListener('loadedmetadata', () => done(a.duration)); a.load();")
        assert duration == pytest.approx(1.0, abs=0.01)
        rows = driver.find_elements("css selector", "table.grid > tbody > tr")
        assert len(rows) == 3 and "soft piano" in rows[0].text
    finally:
        stop_browser(driver)
