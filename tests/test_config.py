"""The config loader: every problem kind, located as FILE:LINE:COL: key: problem, all at once."""
import re
from pathlib import Path

import pytest

from acr.core.config.loader import describe, flag_item, load_config, parse_set
from acr.core.config.schema import (ExperimentConfig, ExperimentParams, FinetuneConfig,
                                    GenerateConfig, GenerationParams)
from acr.core.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def problems(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_config(GenerateConfig, path, list(overrides))
    return [line.replace(str(path), "F") for line in info.value.lines]


def load(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(GenerateConfig, path, list(overrides))


def test_defaults_are_audiocrafts(tmp_path):
    cfg = load(tmp_path, "prompts: [a]\n")
    assert cfg.params == GenerationParams(10.0, True, 250, 0.0, 1.0, 3.0, False, None)
    assert (cfg.model, cfg.device, cfg.seed, cfg.sample_format) == \
        ("musicgen-small", "auto", None, "pcm16")


def test_unknown_key_suggests_the_close_one(tmp_path):
    assert problems(tmp_path, "prompts: [a]\nparams:\n  tempreature: 1.2\n") == \
        ["F:3:3: params.tempreature: unknown key (did you mean 'temperature'?)"]


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    [line] = problems(tmp_path, "prompts: [a]\nzzz: 1\n")
    assert line.startswith("F:2:1: zzz: unknown key; known keys: prompts, model, name")


def test_bool_is_not_an_int_and_string_is_not_a_number(tmp_path):
    assert problems(tmp_path, "prompts: [a]\nseed: true\nparams: {top_k: abc}\n") == [
        "F:2:7: seed: expected an integer, got true",
        "F:3:17: params.top_k: expected an integer, got 'abc'"]


def test_float_forms(tmp_path):
    cfg = load(tmp_path, "prompts: [a]\nparams: {top_p: 3e-1, temperature: 2, cfg_coef: 1_5.0}\n")
    assert (cfg.params.top_p, cfg.params.temperature, cfg.params.cfg_coef) == (0.3, 2.0, 15.0)
    assert isinstance(cfg.params.temperature, float)
    # a quoted "3e-1" is a string on purpose
    assert problems(tmp_path, "prompts: [a]\nparams: {top_p: '3e-1'}\n") == [
        "F:2:17: params.top_p: expected a number, got '3e-1'"]


def test_int_field_rejects_float(tmp_path):
    assert problems(tmp_path, "prompts: [a]\nparams: {top_k: 2.5}\n") == [
        "F:2:17: params.top_k: expected an integer, got 2.5"]


def test_out_of_range(tmp_path):
    assert problems(tmp_path, "prompts: [a]\nparams:\n  duration: -2\n  top_p: 1.5\n") == [
        "F:3:13: params.duration: -2 is out of range: must be greater than 0",
        "F:4:10: params.top_p: 1.5 is out of range: must be at most 1"]


def test_missing_required_key(tmp_path):
    assert problems(tmp_path, "model: tiny-musicgen\n") == [
        "F:1:1: prompts: missing required key: at least one prompt (or a `hybrid` section)"]


def test_empty_file_reports_missing_prompts(tmp_path):
    [line] = problems(tmp_path, "")
    assert "prompts: missing required key" in line


def test_empty_list_and_empty_prompt(tmp_path):
    assert problems(tmp_path, "prompts: []\n") == [
        "F:1:10: prompts: missing required key: at least one prompt (or a `hybrid` section)"]
    assert problems(tmp_path, "prompts: ['ok', '  ']\n") == [
        "F:1:17: prompts[1]: must not be empty"]


def test_duplicate_key(tmp_path):
    assert problems(tmp_path, "prompts: [a]\nseed: 1\nseed: 2\n") == [
        "F:3:1: seed: duplicate key (first set at line 2); keep one"]


def test_value_not_among_allowed(tmp_path):
    assert problems(tmp_path, "prompts: [a]\nsample_format: wav\ndevice: gpu\n") == [
        "F:2:16: sample_format: 'wav' is not one of: pcm16, float32",
        "F:3:9: device: 'gpu' is not valid: use auto, cpu, cuda, cuda:N or mps"]


def test_yaml_syntax_error_is_located(tmp_path):
    [line] = problems(tmp_path, "prompts: [a\nseed: 1\n")
    assert re.match(r"F:\d+:\d+: YAML syntax error: ", line), line


def test_python_tags_are_refused(tmp_path):
    lines = problems(tmp_path, "prompts: [a]\nseed: !!python/object/apply:os.system ['true']\n")
    assert lines == ["F:2:7: seed: tag !!python/object/apply:os.system is not allowed (python "
                     "objects cannot be loaded; acr reads YAML safely); remove it"]


def test_unknown_model_is_located(tmp_path):
    [line] = problems(tmp_path, "prompts: [a]\nmodel: musicgen-huge\n")
    assert line.startswith("F:2:8: model: unknown model 'musicgen-huge'; known models: "
                           "tiny-musicgen, tiny-audiogen, musicgen-small")


def test_every_problem_is_reported_at_once(tmp_path):
    lines = problems(tmp_path, "prompts: [a]\nparams:\n  tempreature: 1\nseed: yes\nseed: 3\n"
                               "name: 'bad name'\n")
    assert lines == [
        "F:5:1: seed: duplicate key (first set at line 4); keep one",
        "F:3:3: params.tempreature: unknown key (did you mean 'temperature'?)",
        "F:4:7: seed: expected an integer, got true",
        "F:6:7: name: 'bad name' is not valid: use letters, digits, '.', '_' and '-' "
        "(starting with a letter or digit)"]


def test_top_level_must_be_a_mapping(tmp_path):
    assert problems(tmp_path, "- a\n- b\n") == ["F:1:1: (top level): expected a mapping of keys, "
                                                "got a list"]


def test_set_overrides_are_checked_and_located(tmp_path):
    cfg = load(tmp_path, "prompts: [a]\n", [parse_set("params.temperature=1e-1"),
                                           parse_set("prompts=[x, y]")])
    assert cfg.params.temperature == 0.1 and cfg.prompts == ["x", "y"]
    assert problems(tmp_path, "prompts: [a]\n", [parse_set("params.top_k=abc")]) == [
        "--set params.top_k=abc: params.top_k: expected an integer, got 'abc'"]
    assert problems(tmp_path, "prompts: [a]\n", [parse_set("params.topk=3")]) == [
        "--set params.topk=3: params.topk: unknown key (did you mean 'top_k'?)"]


@pytest.mark.parametrize("arg", ["novalue", "=3", "a..b=1", "a.b="])
def test_malformed_set_is_a_usage_error(arg):
    with pytest.raises(UsageError) as info:
        parse_set(arg)
    assert info.value.lines[0].startswith(f"--set {arg}: ")


def test_flags_win_over_file_and_are_checked(tmp_path):
    cfg = load(tmp_path, "prompts: [a]\nparams: {duration: 5}\n",
               [("params.duration", flag_item(2.0, "--duration"))])
    assert cfg.params.duration == 2.0
    assert problems(tmp_path, "prompts: [a]\n", [("params.duration", flag_item(-1.0,
                                                                                 "--duration"))]) \
        == ["--duration: params.duration: -1.0 is out of range: must be greater than 0"]


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read config"):
        load_config(GenerateConfig, tmp_path / "nope.yaml")


@pytest.mark.parametrize("schema", [GenerateConfig, ExperimentConfig, FinetuneConfig])
def test_readme_config_reference_matches_the_schema(schema):
    readme = (ROOT / "README.md").read_text()
    block = "\n".join(describe(schema))
    assert block in readme, f"README's {schema.__name__} reference is out of date:\n" + block


EXPERIMENT = "name: e\nmodel: tiny-musicgen\nprompt_sets: {a: [x]}\nparameter_sets: {base: {}}\n"


def experiment_problems(tmp_path, text):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_config(ExperimentConfig, path)
    return [line.replace(str(path), "F") for line in info.value.lines]


def test_batch_size_is_an_int_or_auto(tmp_path):
    path = tmp_path / "e.yaml"
    for value, expected in (("auto", "auto"), ("16", 16)):
        path.write_text(EXPERIMENT + f"batch_size: {value}\n")
        assert load_config(ExperimentConfig, path).batch_size == expected
    assert experiment_problems(tmp_path, EXPERIMENT + "batch_size: true\n") == [
        "F:5:13: batch_size: expected an integer or 'auto', got true"]
    assert experiment_problems(tmp_path, EXPERIMENT + "batch_size: 0\n") == [
        "F:5:13: batch_size: 0 is out of range: must be at least 1"]


def test_model_or_models(tmp_path):
    assert experiment_problems(tmp_path, EXPERIMENT.replace("model: tiny-musicgen\n", "")) == [
        "F:1:1: model: missing required key: the model to use (or `models: [...]` for a model "
        "axis)"]
    assert experiment_problems(tmp_path, EXPERIMENT + "models: [tiny-audiogen]\n") == [
        "F:5:1: models: give either model or models, not both"]
    assert experiment_problems(tmp_path, EXPERIMENT.replace(
        "model: tiny-musicgen", "models: [tiny-musicgen, nope]")) == [
        "F:2:25: models[1]: unknown model 'nope'; known models: tiny-musicgen, tiny-audiogen, "
        "musicgen-small, musicgen-medium, musicgen-large, musicgen-melody, musicgen-melody-large, "
        "musicgen-stereo-small, musicgen-stereo-medium, musicgen-stereo-large, "
        "musicgen-stereo-melody, musicgen-stereo-melody-large, audiogen-medium, "
        "random-musicgen-small, random-musicgen-medium, random-musicgen-large, "
        "random-audiogen-medium (or a Hugging Face id, or a local model folder)"]


def test_empty_parameter_set_takes_the_defaults(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(EXPERIMENT.replace("{base: {}}", "\n  base:\n  hot: {temperature: 2}")
                    + "defaults: {duration: 3}\n")
    cfg = load_config(ExperimentConfig, path)
    assert cfg.parameter_sets["base"] == ExperimentParams(duration=3.0)
    assert cfg.parameter_sets["hot"] == ExperimentParams(duration=3.0, temperature=2.0)


def test_set_names_must_be_folder_safe(tmp_path):
    assert experiment_problems(tmp_path, EXPERIMENT.replace("{a: [x]}", "{'a/b': [x]}")) == [
        "F:3:15: prompt_sets.a/b: name 'a/b' is not valid: use letters, digits, '.', '_' and '-' "
        "(starting with a letter or digit)"]


def test_baseline_names_a_parameter_set(tmp_path):
    text = EXPERIMENT.replace("{base: {}}", "{base: {}, hot: {temperature: 1.5}}")
    assert experiment_problems(tmp_path, text + "baseline: warm\n") == [
        "F:5:11: baseline: 'warm' names no parameter set; use one of: base, hot"]
    path = tmp_path / "ok.yaml"
    path.write_text(text + "baseline: hot\n")
    assert load_config(ExperimentConfig, path).baseline_set == "hot"
    path.write_text(text)
    assert load_config(ExperimentConfig, path).baseline_set == "base"  # the first
    path.write_text(EXPERIMENT.replace("{base: {}}", "{hot: {temperature: 1.5}, baseline: {}}"))
    assert load_config(ExperimentConfig, path).baseline_set == "baseline"  # named so
