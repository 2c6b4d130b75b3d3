"""Prompts from images (image -> words -> audio): the ranking maths against values worked out by
hand, the vocabulary file and its errors, image reading (animated, CMYK, palette, alpha, large,
unreadable), CLIP through the real loader on a tiny random model saved to a folder, and the
whole path from an image on disk to WAVs, sidecars, experiment.json, analysis and export."""
import hashlib
import json
import math
import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image

from acr.core.errors import UsageError
from acr.core.image_prompts import (DEFAULT_VOCABULARY, ImageRequest, Ranked, blend,
                                    describe_images, fill_template, read_image, read_vocabulary,
                                    slot_probabilities, template_fields)
from helpers import ROOT

SUNSET = ROOT / "configs/images/sunset.png"


# ----------------------------------------------------------------------------------------------
# The ranking maths, on known embeddings


def test_blend_weighs_the_unit_image_and_text_embeddings():
    image, text = np.array([2.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.0])  # not unit on purpose
    # 0.75 * [1, 0, 0] + 0.25 * [0, 1, 0] = [0.75, 0.25, 0]; its norm is sqrt(0.625)
    assert np.allclose(blend(image, text, 0.75), [0.75 / math.sqrt(0.625),
                                                  0.25 / math.sqrt(0.625), 0.0])
    assert np.allclose(blend(image, None, 0.75), [1.0, 0.0, 0.0])  # no text: the image alone
    assert np.allclose(blend(image, text, 1.0), [1.0, 0.0, 0.0])
    assert np.allclose(blend(image, text, 0.0), [0.0, 1.0, 0.0])


def test_softmax_per_slot_matches_the_hand_computation():
    query = np.array([3.0, 1.0, 0.0])  # normalised inside: [3, 1, 0] / sqrt(10)
    captions = np.eye(3)  # one unit caption per axis
    # logits = 10 * cos = [30, 10, 0] / sqrt(10); softmax by hand
    a, b = 30 / math.sqrt(10), 10 / math.sqrt(10)
    total = math.exp(a) + math.exp(b) + 1.0
    expected = [math.exp(a) / total, math.exp(b) / total, 1.0 / total]
    got = slot_probabilities(query, captions, 10.0)
    assert np.allclose(got, expected, rtol=1e-12)
    assert got[0] == pytest.approx(0.99813587, abs=1e-8)
    # a slot of two captions at 60 and 90 degrees from the query, scale 2: softmax(1, 0)
    got = slot_probabilities([1.0, 0.0], [[0.5, math.sqrt(3) / 2], [0.0, 1.0]], 2.0)
    assert np.allclose(got, [math.e / (math.e + 1), 1 / (math.e + 1)])


def test_the_template_takes_the_best_phrases_of_each_slot():
    ranking = {"mood": [Ranked("calm", 0.6), Ranked("dark", 0.4)],
               "instruments": [Ranked("piano", 0.5), Ranked("strings", 0.3),
                               Ranked("flute", 0.2)]}
    assert fill_template("{mood} music with {instruments}", ranking) == "calm music with piano"
    assert fill_template("{mood} music with {instruments:3}", ranking) == \
        "calm music with piano, strings and flute"
    assert fill_template("{text}, {mood} {instruments:2}", ranking, "by the sea") == \
        "by the sea, calm piano and strings"
    assert fill_template("{text}, {mood} {instruments:2}", ranking) == "calm piano and strings"
    assert template_fields("{a} {b:2} {text}") == [("a", 1), ("b", 2), ("text", 1)]
    for bad in ("{a:x}", "{a!r}", "{a:0}", "{a.b}", "{text:2}"):
        with pytest.raises(ValueError):
            template_fields(bad)


# ----------------------------------------------------------------------------------------------
# The vocabulary file


def test_the_shipped_vocabulary_has_both_sections():
    music, sfx = read_vocabulary(None, "music"), read_vocabulary(None, "sfx")
    assert [s.name for s in music.slots] == ["mood", "genre", "instruments", "tempo", "texture"]
    assert [s.name for s in sfx.slots] == ["scene", "sources", "ambience"]
    genre = next(s for s in music.slots if s.name == "genre")
    assert genre.captions[0] == "a piece of ambient music"  # the slot's own caption
    assert music.slots[0].captions[0] == "music that sounds calm"  # the section's
    assert music.path == str(DEFAULT_VOCABULARY)


@pytest.mark.parametrize("text, where, message", [
    ("music:\n  template: '{mood}'\n  slots:\n    mood: []\n", ":4:11: music.slots.mood",
     "needs at least 1 item"),
    ("music:\n  template: '{mood} {genre}'\n  slots:\n    mood: [calm]\n", ":2:13: "
     "music.template", "{genre} names no slot; use one of: mood"),
    ("music:\n  template: '{mood}'\n  slots:\n    mood: [calm]\n", ":2:3: music.caption",
     "missing required key"),
    ("music:\n  template: '{mood}'\n  caption: 'music'\n  slots:\n    mood: [calm]\n",
     ":3:12: music.caption", "must contain {phrase}"),
    ("music:\n  template: '{mood:x}'\n  slots:\n    mood: [calm]\n", ":2:13: music.template",
     "is not a slot reference"),
    ("other: 1\n", ":1:1: other", "unknown key"),
])
def test_vocabulary_problems_name_the_file_and_line(tmp_path, text, where, message):
    path = tmp_path / "vocab.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        read_vocabulary(path, "music")
    assert any(line.startswith(f"{path}{where}") and message in line
               for line in caught.value.lines), caught.value.lines


def test_a_vocabulary_without_the_section_a_model_needs(tmp_path):
    path = tmp_path / "vocab.yaml"
    path.write_text("music:\n  template: '{mood}'\n  caption: '{phrase}'\n  slots:\n"
                    "    mood: [calm]\n")
    with pytest.raises(UsageError, match="has no sfx section, which AudioGen models need"):
        read_vocabulary(path, "sfx")
    with pytest.raises(UsageError, match="no such file"):
        read_vocabulary(tmp_path / "missing.yaml", "music")


# ----------------------------------------------------------------------------------------------
# Images


def test_images_are_converted_not_refused(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk)  # red in CMYK
    assert read_image(cmyk).mode == "RGB"
    assert read_image(cmyk).getpixel((5, 5))[0] > 200
    gif = tmp_path / "animated.gif"
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(gif).n_frames == 2
    assert read_image(gif).getpixel((3, 3)) == (255, 0, 0)  # the first frame
    alpha = tmp_path / "alpha.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(alpha)  # fully transparent black
    assert read_image(alpha).getpixel((1, 1)) == (255, 255, 255)  # on white
    palette = tmp_path / "palette.png"
    Image.new("RGB", (10, 10), (0, 128, 0)).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(palette)
    assert read_image(palette).getpixel((1, 1)) == (0, 128, 0)
    grey16 = tmp_path / "grey16.png"
    Image.new("I;16", (10, 10), 1000).save(grey16)
    assert read_image(grey16).mode == "RGB"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("not an image"), "cannot read it as an image"),
    (lambda p: p.write_bytes(SUNSET.read_bytes()[:120]), "cannot read it as an image"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: None, "no such file"),
])
def test_unreadable_images_are_named(tmp_path, make, message):
    path = tmp_path / "picture.png"
    make(path)
    with pytest.raises(UsageError) as caught:
        read_image(path, "prompts[0].image")
    assert caught.value.lines[0].startswith(f"prompts[0].image: {path}: {message}")


# ----------------------------------------------------------------------------------------------
# CLIP through the real loader (a tiny random model saved to a folder)


def test_probabilities_match_clips_own_logits(tiny_clip):
    """Without a text, a slot's probabilities are the softmax of CLIPModel's own
    logits_per_image (logit_scale * cosine, computed by transformers) over the slot's
    captions."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    [described] = describe_images([ImageRequest(str(SUNSET))], str(tiny_clip), None, "music")
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)
    vocabulary = read_vocabulary(None, "music")
    for slot in vocabulary.slots:
        inputs = processor(text=slot.captions, images=[Image.open(SUNSET).convert("RGB")],
                           return_tensors="pt", padding=True)
        with torch.inference_mode():
            expected = model(**inputs).logits_per_image[0].softmax(-1).numpy()
        got = {r.phrase: r.probability for r in described.slots[slot.name]}
        assert np.allclose([got[p] for p in slot.phrases], expected, atol=1e-5)
        best = slot.phrases[int(np.argmax(expected))]
        assert described.slots[slot.name][0].phrase == best
    assert described.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    first = {slot.name: described.slots[slot.name][0].phrase for slot in vocabulary.slots}
    assert described.prompt == (f"{first['mood']} {first['genre']} with {first['instruments']}, "
                                f"{first['tempo']}, {first['texture']}")
    assert described.sha256 == hashlib.sha256(SUNSET.read_bytes()).hexdigest()


def test_a_text_steers_the_ranking(tiny_clip):
    """With a text, the query is the blend of the unit image and text embeddings: weight 1 is
    the image alone, and the text moves the probabilities as the blend says."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    requests = [ImageRequest(str(SUNSET)), ImageRequest(str(SUNSET), "dark rain", 1.0),
                ImageRequest(str(SUNSET), "dark rain", 0.25)]
    alone, full_weight, steered = describe_images(requests, str(tiny_clip), None, "sfx")
    assert full_weight.slots == alone.slots and full_weight.weight == 1.0
    assert alone.weight is None and alone.text is None
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)
    with torch.inference_mode():
        pixels = processor(images=[Image.open(SUNSET).convert("RGB")], return_tensors="pt")
        image = model.get_image_features(**pixels).pooler_output[0].numpy()
        tokens = processor(text=["dark rain"], return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output[0].numpy()
        slot = read_vocabulary(None, "sfx").slots[0]
        captions = model.get_text_features(**processor(
            text=slot.captions, return_tensors="pt", padding=True)).pooler_output.numpy()
    image, text = image / np.linalg.norm(image), text / np.linalg.norm(text)
    query = 0.25 * image + 0.75 * text
    query /= np.linalg.norm(query)
    logits = float(model.logit_scale.detach().exp()) * (captions / np.linalg.norm(
        captions, axis=1, keepdims=True)) @ query
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = {r.phrase: r.probability for r in steered.slots[slot.name]}
    assert np.allclose([got[p] for p in slot.phrases], expected, atol=1e-5)
    assert not np.allclose([got[p] for p in slot.phrases],
                           [{r.phrase: r.probability for r in alone.slots[slot.name]}[p]
                            for p in slot.phrases], atol=1e-3)


def test_large_images_are_resized_by_the_processor(tiny_clip, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), np.uint8)
                    ).save(big)
    [described] = describe_images([ImageRequest(str(big))], str(tiny_clip), None, "music")
    assert all(abs(sum(r.probability for r in ranked) - 1) < 1e-6
               for ranked in described.slots.values())


def test_missing_clip_weights_give_the_offline_message(acr, tmp_path):
    result = acr("describe-image", SUNSET)  # the default CLIP: not in the empty test cache
    assert result.exit_code == 2
    assert "clip_model: CLIP weights 'openai/clip-vit-base-patch32' are not in the local " \
        "Hugging Face cache; on a connected machine run `hf download " \
        "openai/clip-vit-base-patch32`" in result.stderr
    (tmp_path / "empty").mkdir()
    result = acr("describe-image", SUNSET, "--clip-model", tmp_path / "empty")
    assert result.exit_code == 2
    assert f"clip_model: {tmp_path / 'empty'}: not a CLIP model folder" in result.stderr


# ----------------------------------------------------------------------------------------------
# acr describe-image


def test_describe_image_prints_the_ranking_and_the_prompt(acr, tiny_clip):
    [expected] = describe_images([ImageRequest(str(SUNSET))], str(tiny_clip), None, "music")
    result = acr("describe-image", SUNSET, "--clip-model", tiny_clip, "--top", "2")
    assert result.exit_code == 0, result.stderr
    assert f"{SUNSET}: {expected.prompt}" in result.stdout
    mood = expected.slots["mood"]
    assert f"mood\t{mood[0].phrase} ({mood[0].probability:.2f})\t{mood[1].phrase} " \
        f"({mood[1].probability:.2f})" in result.stderr
    result = acr("describe-image", SUNSET, "--clip-model", tiny_clip, "--json", "--section",
                 "sfx", "-p", "rain", "--weight", "0.2")
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["section"] == "sfx" and record["text"] == "rain" and record["weight"] == 0.2
    assert list(record["slots"]) == ["scene", "sources", "ambience"]
    assert len(record["slots"]["scene"]) == 5  # the five best are recorded


def test_describe_image_errors(acr, tiny_clip, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("text")
    result = acr("describe-image", SUNSET, bad, "--clip-model", tiny_clip)
    assert result.exit_code == 2 and f"image: {bad}: cannot read it as an image" in result.stderr
    result = acr("describe-image", SUNSET, "--section", "speech", "--clip-model", tiny_clip)
    assert result.exit_code == 2 and "--section speech: use music or sfx" in result.stderr
    vocab = tmp_path / "v.yaml"
    vocab.write_text("sfx:\n  template: '{a}'\n  caption: '{phrase}'\n  slots:\n    a: [x]\n")
    result = acr("describe-image", SUNSET, "--vocabulary", vocab, "--clip-model", tiny_clip)
    assert result.exit_code == 2 and "has no music section" in result.stderr


# ----------------------------------------------------------------------------------------------
# From an image on disk to WAVs and sidecars


@pytest.mark.slow
def test_generate_from_an_image_end_to_end(acr, in_tmp, tiny_clip):
    [expected] = describe_images([ImageRequest(str(SUNSET), "a calm evening", 0.7)],
                                 str(tiny_clip), None, "music")
    args = ("generate", "--image", SUNSET, "--prompt", "a calm evening", "--weight", "0.7",
            "--model", "tiny-musicgen", "--clip-model", tiny_clip, "--duration", "0.5",
            "--seed", "3")
    result = acr(*args, "--out", "R")
    assert result.exit_code == 0, result.stderr
    [sidecar] = sorted((in_tmp / "R/samples").glob("*.json"))
    side = json.loads(sidecar.read_text())
    assert side["prompt"] == expected.prompt
    image = side["image"]
    assert image["path"] == str(SUNSET) and image["text"] == "a calm evening"
    assert image["sha256"] == hashlib.sha256(SUNSET.read_bytes()).hexdigest()
    assert image["clip_model"] == str(tiny_clip) and image["section"] == "music"
    assert image["weight"] == 0.7 and image["prompt"] == expected.prompt
    assert image["vocabulary"] == str(DEFAULT_VOCABULARY)
    assert image["slots"]["mood"][0] == {"phrase": expected.slots["mood"][0].phrase,
                                         "probability": round(
                                             expected.slots["mood"][0].probability, 4)}
    assert (in_tmp / "R" / image["file"]).read_bytes() == SUNSET.read_bytes()
    assert sidecar.with_suffix(".wav").is_file() and side["samples"] == 16000
    config = yaml.safe_load((in_tmp / "R/config.yaml").read_text())
    assert config["prompts"] == [{"image": str(SUNSET), "text": "a calm evening",
                                  "weight": 0.7}]
    # determinism: the same image and text give the same ranking and prompt again
    again = acr("describe-image", SUNSET, "-p", "a calm evening", "--weight", "0.7",
                "--clip-model", tiny_clip, "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == [image]
    # analyze groups clips by image; export packages the image
    result = acr("analyze", "R", "--no-model-metrics")
    assert result.exit_code == 0, result.stderr
    metrics = (in_tmp / "R/analysis/metrics.csv").read_text().splitlines()
    assert metrics[0].split(",")[:8] == ["path", "model", "parameter_set", "prompt_set",
                                         "prompt_index", "sample_index", "prompt", "image"]
    assert image["file"] in metrics[1]
    result = acr("export", "R", "-o", "R.zip")
    assert result.exit_code == 0, result.stderr
    names = zipfile.ZipFile(in_tmp / "R.zip").namelist()
    assert any(name.endswith(image["file"]) for name in names), names


@pytest.mark.slow
def test_generate_config_with_image_items(acr, in_tmp, tiny_clip):
    """Image items in a generate config beside text prompts, their paths relative to the
    config's folder, an AudioGen model (the sfx section), and the config's own vocabulary."""
    folder = in_tmp / "cfg"
    (folder / "pics").mkdir(parents=True)
    Image.open(SUNSET).save(folder / "pics/sun.gif")
    (folder / "vocab.yaml").write_text(
        "sfx:\n  caption: 'the sound of {phrase}'\n  template: '{src} by {place}'\n"
        "  slots:\n    src: [waves, wind, gulls]\n    place: [the sea, a harbour]\n")
    (folder / "gen.yaml").write_text(
        f"model: tiny-audiogen\nclip_model: {tiny_clip}\nvocabulary: vocab.yaml\n"
        "params: {duration: 0.5}\nprompts:\n  - dogs barking\n  - image: pics/sun.gif\n")
    result = acr("generate", folder / "gen.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    sides = [json.loads(p.read_text()) for p in sorted((in_tmp / "R/samples").glob("*.json"))]
    assert sides[0]["prompt"] == "dogs barking" and "image" not in sides[0]
    image = sides[1]["image"]
    assert image["section"] == "sfx" and image["vocabulary"] == str(folder / "vocab.yaml")
    assert image["path"] == str(folder / "pics/sun.gif")
    words = sides[1]["prompt"].split(" by ")
    assert words == [image["slots"]["src"][0]["phrase"], image["slots"]["place"][0]["phrase"]]
    assert sum(p["probability"] for p in image["slots"]["src"]) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("item, where, message", [
    ("image: missing.png", ":3:12: prompts[0].image", "missing.png: no such file"),
    ("image: bad.png", ":3:12: prompts[0].image", "bad.png: cannot read it as an image"),
    ("image: pic.png\n    weight: 1.5", ":4:13: prompts[0].weight", "must be at most 1"),
    ("image: pic.png\n    txt: x", ":4:5: prompts[0].txt", "unknown key"),
])
def test_bad_image_items_fail_before_anything_is_written(acr, in_tmp, item, where, message):
    Image.open(SUNSET).save(in_tmp / "pic.png")
    (in_tmp / "bad.png").write_text("no")
    config = in_tmp / "gen.yaml"
    config.write_text(f"model: tiny-musicgen\nprompts:\n  - {item}\n")
    result = acr("generate", config, "--out", "R")
    assert result.exit_code == 2
    assert any(line.startswith(f"{config}{where}") and message in line
               for line in result.stderr.splitlines()), result.stderr
    assert not (in_tmp / "R").exists() and not (in_tmp / "experiments").exists()
    result = acr("validate", config)  # acr validate finds the same
    assert result.exit_code == 2 and message in result.stderr


def test_a_bad_vocabulary_in_a_config_is_named_with_its_line(acr, in_tmp):
    (in_tmp / "vocab.yaml").write_text("music:\n  template: '{mood} {tempo}'\n  caption: "
                                       "'{phrase}'\n  slots:\n    mood: [calm]\n")
    config = in_tmp / "gen.yaml"
    config.write_text("model: tiny-musicgen\nvocabulary: vocab.yaml\nprompts: [hello]\n")
    result = acr("validate", config)
    assert result.exit_code == 2
    assert f"{config}:2:13: vocabulary: {in_tmp / 'vocab.yaml'}:2:13: music.template: " \
        "{tempo} names no slot; use one of: mood" in result.stderr


def test_image_flags_are_checked(acr, in_tmp):
    result = acr("generate", "--prompt", "x", "--weight", "0.3", "--model", "tiny-musicgen")
    assert result.exit_code == 2 and "--weight: needs --image" in result.stderr
    result = acr("generate", "--image", SUNSET, "-p", "a", "-p", "b", "--model",
                 "tiny-musicgen")
    assert result.exit_code == 2 and "give at most one --prompt" in result.stderr
    result = acr("generate", "--image", "nowhere.png", "--model", "tiny-musicgen")
    assert result.exit_code == 2
    assert f"--image: prompts[0].image: {in_tmp / 'nowhere.png'}: no such file" in result.stderr
    assert not (in_tmp / "experiments").exists()


@pytest.mark.slow
def test_experiment_with_image_items_end_to_end(acr, in_tmp, tiny_clip):
    """The shipped configs/images.yaml on the tiny models: image items beside a text prompt,
    each described once, recorded in the sidecars and experiment.json, analysed by prompt."""
    result = acr("experiment", ROOT / "configs/images.yaml", "--set", "model=tiny-musicgen",
                 "--set", f"clip_model={tiny_clip}", "--set", "defaults.duration=0.5",
                 "--out", "R")
    assert result.exit_code == 0, result.stderr
    run = in_tmp / "R"
    manifest = json.loads((run / "experiment.json").read_text())
    rows = manifest["samples"]
    assert len(rows) == 2 * 3 * 2  # parameter sets x prompts x samples
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_index"], set()).add(row["prompt"])
        if row["prompt_index"] < 2:
            assert row["image"]["sha256"] == hashlib.sha256(SUNSET.read_bytes()).hexdigest()
            assert row["prompt"] == row["image"]["prompt"]
            side = json.loads((run / row["path"]).with_suffix(".json").read_text())
            assert side["image"] == row["image"] and side["prompt"] == row["prompt"]
        else:
            assert "image" not in row
    assert all(len(prompts) == 1 for prompts in by_prompt.values())  # described once
    assert by_prompt[2] == {"calm ambient music at sunset with soft synthesizer pads"}
    steered = next(r for r in rows if r["prompt_index"] == 1)["image"]
    assert steered["text"] == "a calm evening by the sea" and steered["weight"] == 0.7
    assert (run / steered["file"]).read_bytes() == SUNSET.read_bytes()
    metrics = (run / "analysis/metrics.csv").read_text().splitlines()
    assert len(metrics) == 13 and metrics[0].split(",")[7] == "image"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["prompt_sets"]["sunset"][0] == {"image": str(SUNSET), "text": None,
                                                  "weight": 0.5}
    # a launched run's finishing task, when its resume or a failed share finishes it, has only
    # the config's samples, whose image items are not described yet: the manifest and the
    # trackers' clip captions take the prompts the sidecars recorded
    from types import SimpleNamespace

    from acr.commands.experiment.manifest import write_manifest
    from acr.commands.experiment.plan import expand
    from acr.commands.experiment.tracked import track_clips
    from acr.core.config.loader import load_config
    from acr.core.config.schema import ExperimentConfig

    cfg = load_config(ExperimentConfig, run / "config.yaml")
    assert write_manifest(run, cfg, expand(cfg), complete=True)["samples"] == rows
    tracked: list = []
    track_clips(SimpleNamespace(active=True, clips=lambda step, group, clips: tracked.extend(
        clips)), 14, run, expand(cfg), 1)
    prompts = {row["path"]: row["prompt"] for row in rows}
    assert len(tracked) == 2 and all(clip.caption for clip in tracked)  # image items, both
    assert [clip.caption for clip in tracked] == \
        [prompts[clip.path.relative_to(run).as_posix()] for clip in tracked]


# ----------------------------------------------------------------------------------------------
# The README


def test_readme_references_match_the_schemas():
    from acr.core.config.loader import describe
    from acr.core.config.schema import ImagePrompt
    from acr.core.image_prompts import SlotPhrases, VocabularySection

    readme = (ROOT / "README.md").read_text()
    for schema in (ImagePrompt, VocabularySection, SlotPhrases):
        block = "\n".join(describe(schema))
        assert f"```yaml\n{block}\n```" in readme, f"README's {schema.__name__} is out of date"


def test_readme_worked_example_is_what_the_tiny_clip_prints(acr, tiny_clip):
    """The worked example of "Images as prompts": its rows and prompt, as the tests' tiny CLIP
    prints them (columns aligned in the README, tab-separated in a pipe)."""
    readme = (ROOT / "README.md").read_text()
    example = readme.split("$ acr describe-image configs/images/sunset.png --clip-model "
                           "tiny-clip/\n")[1].split("```")[0].strip().splitlines()
    result = acr("describe-image", SUNSET, "--clip-model", tiny_clip)
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stderr.splitlines() if "\t" in line]
    assert [" ".join(line.split()) for line in example[1:-1]] == \
        [" ".join(line.split("\t")) for line in rows]
    assert example[-1] == f"configs/images/sunset.png: {result.stdout.split(': ', 1)[1].strip()}"


@pytest.mark.slow
def test_a_model_axis_describes_each_image_per_section_and_resumes(acr, in_tmp, tiny_clip):
    """MusicGen rows use the music section, AudioGen rows the sfx section; a resumed run
    describes the image again and regenerates the missing sample with the same prompt."""
    Image.open(SUNSET).save(in_tmp / "pic.png")
    (in_tmp / "e.yaml").write_text(
        f"name: axis\nmodels: [tiny-musicgen, tiny-audiogen]\nclip_model: {tiny_clip}\n"
        "analyze: false\ndefaults: {duration: 0.5}\nparameter_sets: {base: {}}\n"
        "prompt_sets:\n  pics: [{image: pic.png}]\n")
    result = acr("experiment", in_tmp / "e.yaml", "--out", "R")
    assert result.exit_code == 0, result.stderr
    rows = json.loads((in_tmp / "R/experiment.json").read_text())["samples"]
    sections = {row["model"]: row["image"]["section"] for row in rows}
    assert sections == {"tiny-musicgen": "music", "tiny-audiogen": "sfx"}
    music = next(r for r in rows if r["model"] == "tiny-musicgen")
    sfx = next(r for r in rows if r["model"] == "tiny-audiogen")
    assert list(music["image"]["slots"]) == ["mood", "genre", "instruments", "tempo", "texture"]
    assert list(sfx["image"]["slots"]) == ["scene", "sources", "ambience"]
    wav = in_tmp / "R" / sfx["path"]
    before = wav.read_bytes()
    wav.unlink()
    result = acr("experiment", "--resume", "R")
    assert result.exit_code == 0, result.stderr
    again = json.loads((in_tmp / "R/experiment.json").read_text())["samples"]
    def untimed(samples):
        return [{k: v for k, v in r.items() if k != "generation_seconds"} for r in samples]

    assert untimed(again) == untimed(rows) and wav.read_bytes() == before
