"""The random-weight models: the released architectures, built like the tiny ones.

The reference figures are not computed by acr's code:
- musicgen-small's LM holds 420,371,456 parameters, counted by torchinfo on the released weights
  (github.com/facebookresearch/audiocraft/issues/169; "300M" in the paper is a size name).
- medium / large / audiogen-medium: the arithmetic below on AudioCraft's released configs
  (config/model/lm/model_scale/*.yaml, musicgen_lm.yaml, conditioner/text2{music,sound}.yaml):
  per layer 16 d^2 + 6 d (self- and cross-attention 4 d^2 each, feed-forward 2 x 4 d^2, three
  layer norms), + 4 x 2049 x d embeddings + 4 x d x 2048 heads + 2 d final norm + the text
  projection (t5 dim x d + d).
"""
import json

import pytest
import soundfile as sf
import torch

from acr.commands.doctor import model_fit
from acr.core import models
from acr.core.memory import generation_bytes_per_sample

# medium: 48 x (16 x 1536^2 + 6 x 1536) = 1,812,381,696 transformer
#   + 12,589,056 embeddings + 12,582,912 heads + 3,072 norm + 768 x 1536 + 1536 = 1,838,737,920
# large: 48 x (16 x 2048^2 + 6 x 2048) = 3,221,815,296
#   + 16,785,408 + 16,777,216 + 4,096 + 768 x 2048 + 2048 = 3,256,956,928
# audiogen-medium: as medium with t5-large's 1024 inputs: 1,838,737,920 + 256 x 1536 = 1,839,131,136
RELEASED_LM_PARAMETERS = {
    "random-musicgen-small": 420_371_456,
    "random-musicgen-medium": 1_838_737_920,
    "random-musicgen-large": 3_256_956_928,
    "random-audiogen-medium": 1_839_131_136,
}
RELEASED_SHAPES = {  # (dim, heads, layers): config/model/lm/model_scale/{small,medium,large}.yaml
    "random-musicgen-small": (1024, 16, 24), "random-musicgen-medium": (1536, 24, 48),
    "random-musicgen-large": (2048, 32, 48), "random-audiogen-medium": (1536, 24, 48)}


def lm_parameters_without_lut(lm) -> int:
    """The LM's parameters less the lookup table standing in for T5 (T5 is outside the
    released state dict; the projection from its output is in both)."""
    lut = lm.condition_provider.conditioners["description"].embed.weight.numel()
    return sum(p.numel() for p in lm.parameters()) - lut


def test_random_names_resolve_and_are_listed_with_their_label(acr):
    for name, family in (("random-musicgen-small", "musicgen"),
                         ("random-audiogen-medium", "audiogen")):
        spec = models.resolve_model(name)
        assert (spec.family, spec.kind) == (family, "random")
        assert spec.source.endswith(f"{name}-v{models.RANDOM_VERSION}")
    assert models.model_window("random-musicgen-large") == 30.0
    assert models.model_window("random-audiogen-medium") == 10.0
    result = acr("models")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name in models.RANDOM:
        assert "random weights: for speed and memory work only" in lines[name]
        assert "instead of T5" in lines[name]
    assert "musicgen-large's architecture (32000 Hz)" in lines["random-musicgen-large"]
    assert "audiogen-medium's architecture (16000 Hz)" in lines["random-audiogen-medium"]


@pytest.mark.parametrize("name", list(models.RANDOM))
def test_random_lm_has_the_released_architecture(name):
    lm = models.build_on_meta(name).lm  # meta device: shapes only, no memory
    assert lm_parameters_without_lut(lm) == pytest.approx(RELEASED_LM_PARAMETERS[name], rel=0.01)
    assert models.lm_parameter_count(models.released_scale(name), models.RANDOM[name][0]) == \
        RELEASED_LM_PARAMETERS[name]  # what `acr doctor` sizes the released models with
    dim, heads, layers = RELEASED_SHAPES[name]
    assert (lm.dim, lm.card, lm.num_codebooks) == (dim, 2048, 4)
    assert len(lm.transformer.layers) == layers
    layer = lm.transformer.layers[0]
    assert layer.self_attn.num_heads == heads and layer.cross_attention is not None
    assert (layer.linear1.in_features, layer.linear1.out_features) == (dim, 4 * dim)
    assert layer.linear1.bias is None and layer.self_attn.out_proj.bias is None
    assert lm.transformer.positional_embedding == "sin"
    assert lm.pattern_provider.delays == [0, 1, 2, 3]
    text = lm.condition_provider.conditioners["description"]
    assert text.output_proj.in_features == (1024 if "audiogen" in name else 768)  # t5-large/base


@pytest.mark.parametrize("name, rate", [("random-musicgen-medium", 32000),
                                        ("random-audiogen-medium", 16000)])
def test_random_codec_is_encodec_at_50_frames_a_second(name, rate):
    codec = models.build_on_meta(name).compression
    assert (codec.sample_rate, codec.frame_rate) == (rate, 50)
    assert (codec.num_codebooks, codec.cardinality) == (4, 2048)
    assert codec.encoder.hop_length == rate // 50


def test_doctor_sizes_the_released_models_from_the_random_models_architecture():
    """`acr doctor`'s table: weights and batch from the same shapes the random models have."""
    gpu = {"device": "cuda:0", "memory_free": 80e9}
    fit = {m["model"]: m for m in model_fit(gpu)}
    for released in ("musicgen-small", "musicgen-large", "audiogen-medium"):
        lm = models.build_on_meta(f"random-{released}").lm
        weights = lm_parameters_without_lut(lm) * 2 + 0.5e9  # fp16 + T5 and EnCodec
        assert fit[released]["weights_gb"] == round(weights / 1e9, 1)
        per_sample = generation_bytes_per_sample(lm.dim, len(lm.transformer.layers), 30 * 50,
                                                 lm.card, lm.num_codebooks)
        assert fit[released]["suggested_batch_size"] == \
            min(64, int((0.9 * 80e9 - weights) // per_sample))


@pytest.mark.slow
def test_random_musicgen_small_generates_through_acr_generate(acr, in_tmp):
    """Built on first use in the release layout (the LM in float16, as released), loaded by
    AudioCraft's own loader, 0.2 s generated end to end."""
    result = acr("generate", "--model", "random-musicgen-small", "--device", "cpu",
                 "--prompt", "calm piano", "--duration", "0.2", "--seed", "3", "--out", "R")
    assert result.exit_code == 0, result.stderr
    assert "random weights: for speed and memory work only" in result.stderr
    info = sf.info(str(in_tmp / "R" / "samples" / "0-calm-piano.wav"))
    assert (info.samplerate, info.frames, info.channels) == (32000, 6400, 1)
    side = json.loads((in_tmp / "R" / "samples" / "0-calm-piano.json").read_text())
    assert side["model"] == "random-musicgen-small"

    folder = models.tiny_model_dir("random-musicgen-small")
    lm_state = torch.load(folder / "state_dict.bin", mmap=True)["best_state"]
    assert {t.dtype for t in lm_state.values()} == {torch.float16}
    loaded = models.load_model("random-musicgen-small", "cpu")
    lm = loaded.model.lm
    assert lm_parameters_without_lut(lm) == RELEASED_LM_PARAMETERS["random-musicgen-small"]
    assert (loaded.sample_rate, loaded.frame_rate, loaded.max_duration) == (32000, 50, 30.0)
    assert (lm.num_codebooks, lm.card) == (4, 2048)
