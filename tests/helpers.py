"""Helpers shared by the tests (fixtures live in conftest.py): subprocess runners, a check that
plain AudioCraft loads a model folder, GPU markers."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def plain_audiocraft_generates(folder, duration: float = 1.0, cls: str = "MusicGen") -> str:
    """Load `folder` with plain audiocraft `cls.get_pretrained` in a separate Python process (no
    acr import), generate one clip, return "(shape) sample_rate"."""
    proc = run_python("import sys\n"
                      f"from audiocraft.models import {cls}\n"
                      f"m = {cls}.get_pretrained(sys.argv[1], device='cpu')\n"
                      f"m.set_generation_params(duration={duration})\n"
                      "print(tuple(m.generate(['warm piano chords']).shape), m.sample_rate)\n",
                      str(folder))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def run_acr(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acr", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


gpu = pytest.mark.gpu
requires_gpu = pytest.mark.skipif("not __import__('torch').cuda.is_available()",
                                  reason="needs a CUDA GPU")


CLAP_WORDS = ("<s> <pad> </s> <unk> <mask> soft piano quiet strings slow pad heavy drums "
              "distorted guitar brass hits dog barks rain").split()


def build_tiny_clap(folder: Path, mel_bins: int = 16, extractor_mel_bins: int | None = None,
                    seed: int = 0) -> Path:
    """A tiny random CLAP in the Hugging Face layout (config, weights, processor): a word-level
    tokenizer made with the `tokenizers` library as a RobertaTokenizer (what ClapProcessor
    loads), a ClapFeatureExtractor at 48 kHz with a 1 s window, and a ClapModel of ~23k
    parameters. `extractor_mel_bins` other than `mel_bins` makes a model that loads but fails
    on its first clip."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              RobertaTokenizer)

    vocab = {word: index for index, word in enumerate(CLAP_WORDS)}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    tokenizer = RobertaTokenizer(tokenizer_object=words, bos_token="<s>", eos_token="</s>",
                                 sep_token="</s>", cls_token="<s>", pad_token="<pad>",
                                 unk_token="<unk>", mask_token="<mask>")
    extractor = ClapFeatureExtractor(feature_size=extractor_mel_bins or mel_bins,
                                     sampling_rate=48000, hop_length=480, max_length_s=1,
                                     fft_window_size=512, truncation="rand_trunc",
                                     padding="repeatpad", frequency_min=50,
                                     frequency_max=14000)
    config = ClapConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 32,
                     "max_position_embeddings": 40, "pad_token_id": vocab["<pad>"]},
        audio_config={"num_mel_bins": mel_bins, "spec_size": 64, "window_size": 4,
                      "patch_size": 4, "patch_stride": [4, 4], "hidden_size": 32,
                      "depths": [1, 1], "num_attention_heads": [2, 2],
                      "patch_embeds_hidden_size": 16},
        projection_dim=8)
    torch.manual_seed(seed)
    ClapModel(config).eval().save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
