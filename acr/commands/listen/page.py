"""The blind test page: one self-contained index.html (CSS and JS inline, audio in audio/ beside
it) that works from file://, from an unzipped `acr export` package and through `acr listen serve`.

The page gets only what a rater may see: trial ids, opaque audio file names, labels (A/B, 1..n)
and prompts. Its slot (trial order) comes from `?slot=N` (acr listen serve hands them out in
turn) or is drawn at random. A rating is refused until its clip was played to the end; each trial
records the answer, the time spent, how often each clip was played and whether it was played to
the end. The last screen downloads the answers as JSON (for `acr listen import`) and, when the
page was served by `acr listen serve`, submits them.
"""
from __future__ import annotations

import html
import json

from acr.commands.listen.design import MOS_LABELS, Design

RESPONSE_FORMAT = "acr-listening-response/1"
MATCH_LABELS = ["Not at all", "Slightly", "Partly", "Mostly", "Completely"]
INSTRUCTIONS = {
    "mos": "You will hear {n} short clips, one at a time. Listen to each clip to the end, then "
           "rate its overall quality from 1 (bad) to 5 (excellent); when a description is "
           "shown, also rate how well the clip matches it.",
    "ab": "You will hear {n} pairs of clips made for the same description. Listen to both clips "
          "of a pair to the end, then choose the one you find better.",
    "mushra": "You will hear {n} sets of clips made for the same description. Listen to every "
              "clip of a set to the end and rate each one from 0 (bad) to 100 (excellent), "
              "comparing them with each other{reference}.",
}


def page_data(design: Design) -> dict:
    """What the page's script receives: no setting, model or file name."""
    items = {item["id"]: item for item in design.data["items"]}
    slots = []
    for trials in design.data["slots"]:
        slots.append([{"id": t["id"], "prompt": items[t["item"]]["prompt"],
                       "reference": design.clip(items[t["item"]]["reference"])["src"]
                       if items[t["item"]].get("reference") else None,
                       "clips": [{"label": c["label"], "src": design.clip(c["clip"])["src"]}
                                 for c in t["clips"]]} for t in trials])
    return {"format": RESPONSE_FORMAT, "test": design.name, "design": design.kind,
            "id": design.id, "no_preference": design.data["no_preference"], "slots": slots,
            "mos_labels": MOS_LABELS, "match_labels": MATCH_LABELS}


def render_test_page(design: Design) -> str:
    data = page_data(design)
    count = len(design.data["slots"][0])
    reference = " and with the reference" if design.data.get("reference_min") else ""
    instructions = INSTRUCTIONS[design.kind].format(n=count, reference=reference)
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (TEMPLATE.replace("{{instructions}}", html.escape(instructions))
            .replace("{{title}}", {"mos": "Rate the clips", "ab": "Which clip is better?",
                                   "mushra": "Rate the clips against each other"}[design.kind])
            .replace("{{css}}", CSS).replace("{{script}}", SCRIPT).replace("{{data}}", blob))


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Listening test</title>
<style>{{css}}</style>
</head>
<body>
<main>
<section id="intro">
  <h1>{{title}}</h1>
  <p>{{instructions}}</p>
  <p>Use headphones in a quiet room, and set a comfortable volume before you start.</p>
  <label>Your rater id (optional) <input id="rater" maxlength="100" autocomplete="off"></label>
  <p><button id="start" type="button">Start</button></p>
</section>
<section id="trial" hidden>
  <p id="progress"></p>
  <div id="stage"></div>
  <p class="hint" id="hint"></p>
  <p><button id="next" type="button" disabled>Next</button></p>
</section>
<section id="done" hidden>
  <h1>Thank you</h1>
  <p>Your answers are ready. Download them and send the file to the person who runs the test.</p>
  <p><button id="download" type="button">Download your answers</button>
     <button id="submit" type="button" hidden>Submit your answers</button></p>
  <p id="status" role="status"></p>
</section>
</main>
<script id="acr-data" type="application/json">{{data}}</script>
<script>{{script}}</script>
</body>
</html>
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
main { max-width: 44rem; margin: 2rem auto; padding: 1.5rem 2rem; background: #fff;
       border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.12); }
h1 { font-size: 1.4rem; margin-top: 0; }
button { font: inherit; padding: .45rem 1rem; border-radius: 6px; border: 1px solid #888;
         background: #fafafa; cursor: pointer; }
button:disabled { opacity: .45; cursor: default; }
button.playing { background: #2d6cdf; color: #fff; border-color: #2d6cdf; }
#next, #start, #download, #submit { background: #2d6cdf; color: #fff; border-color: #2d6cdf; }
#progress { color: #666; margin-top: 0; }
.prompt { font-style: italic; background: #f1f4fa; padding: .5rem .8rem; border-radius: 6px; }
.row { display: flex; align-items: center; gap: 1rem; margin: .7rem 0; }
.row .done::after { content: " \\2713"; }
fieldset { border: 1px solid #ddd; border-radius: 6px; margin: .8rem 0; }
fieldset:disabled { opacity: .5; }
legend { font-weight: 600; }
.scale label { display: inline-block; margin: .2rem .6rem .2rem 0; }
input[type=range] { flex: 1; }
.value { width: 2.5rem; text-align: right; font-variant-numeric: tabular-nums; }
.hint { color: #a05a00; min-height: 1.2em; }
input#rater { margin-left: .5rem; padding: .3rem; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("acr-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var query = new URLSearchParams(window.location.search);
  var slot = parseInt(query.get("slot"), 10);
  if (!(slot >= 0 && slot < D.slots.length)) slot = Math.floor(Math.random() * D.slots.length);
  var trials = D.slots[slot];
  var state = { rater: "", started: null, index: 0, answers: [], current: null };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function player(label, src, caption) {
    var cur = state.current;
    var audio = el("audio", { preload: "auto", src: src });
    var button = el("button", { type: "button", "class": "play", "data-label": label },
                    "\u25B6 " + caption);
    cur.audios.push(audio);
    audio.addEventListener("play", function () {
      cur.plays[label] = (cur.plays[label] || 0) + 1;
      cur.audios.forEach(function (other) { if (other !== audio) other.pause(); });
      button.classList.add("playing");
    });
    audio.addEventListener("pause", function () { button.classList.remove("playing"); });
    audio.addEventListener("ended", function () {
      button.classList.remove("playing");
      if (label !== "reference") {
        cur.ended[label] = true;
        button.classList.add("done");
      }
      update();
    });
    button.addEventListener("click", function () {
      if (audio.paused) { audio.currentTime = 0; audio.play(); } else { audio.pause(); }
    });
    return { audio: audio, button: button };
  }

  function scale(name, legend, labels, onPick) {
    var box = el("fieldset", { "class": "scale", "data-question": name });
    box.appendChild(el("legend", {}, legend));
    labels.forEach(function (text, i) {
      var value = i + 1;
      var label = el("label");
      var input = el("input", { type: "radio", name: name, value: String(value) });
      input.addEventListener("change", function () { onPick(value); });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + value + " " + text));
      box.appendChild(label);
    });
    return box;
  }

  function allPlayed(t) {
    return t.clips.every(function (c) { return state.current.ended[c.label]; });
  }

  function complete(t) {
    var a = state.current.answer;
    if (D.design === "mos") return a.quality !== undefined && (!t.prompt || a.match !== undefined);
    if (D.design === "ab") return a.choice !== undefined;
    return t.clips.every(function (c) { return state.current.touched[c.label]; });
  }

  function update() {
    var t = trials[state.index];
    var cur = state.current;
    cur.gates.forEach(function (gate) {
      gate.node.disabled = !cur.ended[gate.label] && !(gate.label === "*" && allPlayed(t));
    });
    var ready = complete(t) && allPlayed(t);
    $("next").disabled = !ready;
    $("hint").textContent = allPlayed(t) ? (ready ? "" : "Answer to go on.") :
      "Listen to " + (t.clips.length > 1 ? "every clip" : "the clip") + " to the end to rate.";
  }

  function renderTrial() {
    var t = trials[state.index];
    var cur = { id: t.id, answer: {}, plays: {}, ended: {}, touched: {}, gates: [], audios: [],
                shown: performance.now() };
    state.current = cur;
    $("progress").textContent = "Trial " + (state.index + 1) + " of " + trials.length;
    var stage = $("stage");
    while (stage.firstChild) stage.removeChild(stage.firstChild);
    if (t.prompt) stage.appendChild(el("p", { "class": "prompt" }, "Description: \u201C" +
                                                                 t.prompt + "\u201D"));
    if (t.reference) {
      var row = el("div", { "class": "row" });
      row.appendChild(player("reference", t.reference, "Reference").button);
      stage.appendChild(row);
    }
    if (D.design === "mos") {
      var row1 = el("div", { "class": "row" });
      row1.appendChild(player(t.clips[0].label, t.clips[0].src, "Play the clip").button);
      stage.appendChild(row1);
      var quality = scale("quality", "Overall quality", D.mos_labels,
                          function (v) { cur.answer.quality = v; update(); });
      stage.appendChild(quality);
      cur.gates.push({ label: "*", node: quality });
      if (t.prompt) {
        var match = scale("match", "How well does it match the description?", D.match_labels,
                          function (v) { cur.answer.match = v; update(); });
        stage.appendChild(match);
        cur.gates.push({ label: "*", node: match });
      }
    } else if (D.design === "ab") {
      var row2 = el("div", { "class": "row" });
      t.clips.forEach(function (c) { row2.appendChild(player(c.label, c.src, c.label).button); });
      stage.appendChild(row2);
      var choice = el("fieldset", { "class": "scale", "data-question": "choice" });
      choice.appendChild(el("legend", {}, "Which clip is better?"));
      var options = t.clips.map(function (c) { return [c.label, c.label + " is better"]; });
      if (D.no_preference) options.push(["none", "No preference"]);
      options.forEach(function (o) {
        var label = el("label");
        var input = el("input", { type: "radio", name: "choice", value: o[0] });
        input.addEventListener("change", function () { cur.answer.choice = o[0]; update(); });
        label.appendChild(input);
        label.appendChild(document.createTextNode(" " + o[1]));
        choice.appendChild(label);
      });
      stage.appendChild(choice);
      cur.gates.push({ label: "*", node: choice });
    } else {
      cur.answer.scores = {};
      t.clips.forEach(function (c) {
        var row3 = el("div", { "class": "row" });
        row3.appendChild(player(c.label, c.src, c.label).button);
        var slider = el("input", { type: "range", min: "0", max: "100", step: "1", value: "50",
                                   "data-label": c.label, "aria-label": "score of " + c.label });
        var shown = el("span", { "class": "value" }, "\u2013");
        slider.addEventListener("input", function () {
          cur.answer.scores[c.label] = parseInt(slider.value, 10);
          cur.touched[c.label] = true;
          shown.textContent = slider.value;
          update();
        });
        row3.appendChild(slider);
        row3.appendChild(shown);
        stage.appendChild(row3);
        cur.gates.push({ label: c.label, node: slider });
      });
    }
    update();
  }

  function next() {
    var cur = state.current;
    var t = trials[state.index];
    cur.audios.forEach(function (a) { a.pause(); });
    var plays = {}, ended = {};
    t.clips.forEach(function (c) {
      plays[c.label] = cur.plays[c.label] || 0;
      ended[c.label] = !!cur.ended[c.label];
    });
    if (t.reference) plays.reference = cur.plays.reference || 0;
    state.answers.push({ id: t.id, answer: cur.answer, plays: plays, played_to_end: ended,
                         time_ms: Math.round(performance.now() - cur.shown) });
    state.index += 1;
    if (state.index < trials.length) { renderTrial(); return; }
    $("trial").hidden = true;
    $("done").hidden = false;
    if (window.location.protocol.indexOf("http") === 0) $("submit").hidden = false;
  }

  function response() {
    return { format: D.format, test: D.test, design_id: D.id, slot: slot, rater: state.rater,
             started: state.started, finished: new Date().toISOString(),
             user_agent: navigator.userAgent, trials: state.answers };
  }

  $("start").addEventListener("click", function () {
    state.rater = $("rater").value.trim() ||
      "anonymous-" + Math.random().toString(36).slice(2, 8);
    state.started = new Date().toISOString();
    $("intro").hidden = true;
    $("trial").hidden = false;
    renderTrial();
  });
  $("next").addEventListener("click", next);
  $("download").addEventListener("click", function () {
    var blob = new Blob([JSON.stringify(response(), null, 1)], { type: "application/json" });
    var link = el("a", { href: URL.createObjectURL(blob),
                         download: "answers-" + D.test + "-slot" + slot + ".json" });
    document.body.appendChild(link);
    link.click();
    link.remove();
    $("status").textContent = "Downloaded " + link.getAttribute("download") + ".";
  });
  $("submit").addEventListener("click", function () {
    $("submit").disabled = true;
    fetch("submit", { method: "POST", headers: { "Content-Type": "application/json" },
                      body: JSON.stringify(response()) })
      .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
      .then(function (x) {
        $("status").textContent = x[1].message;
        if (!x[0]) $("submit").disabled = false;
      })
      .catch(function (e) { $("status").textContent = "Not sent: " + e; $("submit").disabled = false; });
  });
})();
"""
