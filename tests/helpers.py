"""Helpers shared by the tests (fixtures live in conftest.py): subprocess runners, a check that
plain AudioCraft loads a model folder, GPU markers."""
import signal
import subprocess
import sys
import time
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


def tiny_melody_config() -> dict:
    """The tiny MusicGen's config with AudioCraft's chroma_stem conditioner (as the melody
    models have), its chroma prepended to the text condition."""
    from acr.core import models

    cfg = models.tiny_model_config("tiny-musicgen")
    cfg["conditioners"]["self_wav"] = {"model": "chroma_stem", "chroma_stem": {
        "sample_rate": 32000, "n_chroma": 12, "radix2_exp": 14, "argmax": True,
        "match_len_on_eval": False, "eval_wavs": None, "n_eval_wavs": 100, "cache_path": None}}
    cfg["fuser"]["prepend"] = ["self_wav"]
    return cfg


def write_tiny_htdemucs() -> Path:
    """Write a tiny random HTDemucs package (demucs' own serialisation) into torch's hub cache
    ($TORCH_HOME) as htdemucs' one model, where `pretrained.get_model('htdemucs')` reads it."""
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    from acr.core.models import HTDEMUCS_FILE

    rng = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], channels=4, depth=2,
                     nfft=512, t_layers=1, t_heads=1, segment=1, dconv_depth=1, dconv_comp=2)
    torch.random.set_rng_state(rng)
    path = Path(torch.hub.get_dir()) / "checkpoints" / HTDEMUCS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(serialize_model(model, OmegaConf.create({}), half=False), path)
    return path


def write_tiny_melody_model(folder: Path) -> Path:
    """Build the tiny melody MusicGen with AudioCraft's builders (its chroma conditioner loads
    demucs, so the tiny htdemucs must be in place) and write it in the release layout."""
    import torch
    from omegaconf import OmegaConf

    from acr.core import models

    cfg = tiny_melody_config()
    builders = models.import_audiocraft().builders
    rng = torch.random.get_rng_state()
    torch.manual_seed(1234)
    lm = builders.get_lm_model(OmegaConf.create(cfg))
    torch.random.set_rng_state(rng)
    compression = models.load_model("tiny-musicgen", "cpu").model.compression_model
    models.write_release_folder(folder, cfg, lm.state_dict(), compression.state_dict())
    return folder


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny random CLIP in the Hugging Face layout (config, weights, processor), as
    `openai/clip-vit-base-patch32` is laid out: a CLIPModel with 1-layer text and vision towers
    (dim 16, 8-d projections, 32x32 images in 8x8 patches), a CLIPTokenizer whose byte-level BPE
    (the `tokenizers` library, built by the tokenizer) knows single characters only, and a
    CLIPImageProcessor that resizes and crops to 32x32."""
    import string

    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTokenizer)
    from transformers.utils import logging as transformers_logging

    specials = ["<|startoftext|>", "<|endoftext|>"]
    chars = list(string.ascii_lowercase + string.digits + ",.-'")
    vocab = {w: i for i, w in enumerate(specials + chars + [c + "</w>" for c in chars])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # (no torchvision: the PIL processor is used)
    processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                   crop_size={"height": 32, "width": 32})
    transformers_logging.set_verbosity(verbosity)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8)
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(folder)
    torch.random.set_rng_state(rng)
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# ---- tracker read-back: TensorBoard's and W&B's own readers --------------------------------------

def tensorboard_events(folder: Path):
    """TensorBoard's own EventAccumulator over a run's tensorboard/ folder, everything loaded."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={
        ea.SCALARS: 0, ea.AUDIO: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def wandb_records(run_dir: Path) -> list:
    """Every record of the run's offline W&B transaction logs (RUN/wandb/*/run-*.wandb), in
    order, as wandb's own protobuf `Record`s. The file is a LevelDB-style log (wandb's
    datastore: a 7-byte header ':W&B', 0xBEE1, version 0; 32 KiB blocks of records, each a
    crc32, a length, a FULL/FIRST/MIDDLE/LAST type and data); wandb 0.31 moved its reader into
    wandb-core (Go), so this walks the blocks and leaves the decoding to wandb's protobufs."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in sorted(Path(run_dir).glob("wandb/*/run-*.wandb")):
        if path.parent.is_symlink():  # wandb/latest-run links to the newest run's folder
            continue
        data = path.read_bytes()
        ident, magic, version = struct.unpack("<4sHB", data[:7])
        assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), path
        pos, pending = 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header: padding
                pos += 32768 - pos % 32768
                continue
            checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk = data[pos + 7:pos + 7 + length]
            if kind == 0 and length == 0:  # zero fill at the end of a block
                pos += 32768 - pos % 32768
                continue
            assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum, path
            pos += 7 + length
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(pending)
                records.append(record)
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows (one per logged step, in order) of a run's offline W&B logs."""
    import json

    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:  # media come as nested keys: [tag, field]
            path = [item.key] if item.key else list(item.nested_key)
            node = row
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


class FileRecorder:
    """A tracking sink that appends each call to a JSON-lines file (for sinks in a child
    process, whose calls the test cannot see otherwise); `fail_on`: the call kind that raises;
    `hang_on`: the call kind that never returns (as wandb.finish() on a stalled network),
    after it wrote its process id to PATH.hung."""

    def __init__(self, path: Path, fail_on: str | None = None, hang_on: str | None = None):
        self.path, self.fail_on, self.hang_on = Path(path), fail_on, hang_on

    def _record(self, *entry) -> None:
        import json
        import os

        if entry[0] == self.fail_on:
            raise ValueError(f"{entry[0]} refused")
        if entry[0] == self.hang_on:
            Path(str(self.path) + ".hung").write_text(str(os.getpid()))
            time.sleep(3600)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def config(self, config):
        self._record("config", config)

    def scalars(self, step, values):
        self._record("scalars", step, values)

    def clips(self, step, clips):
        self._record("clips", step, [str(c.path) for c in clips])

    def images(self, step, images):
        self._record("images", step, {k: str(v) for k, v in images.items()})

    def text(self, step, values):
        self._record("text", step, values)

    def close(self):
        self._record("close")


def open_file_recorder(path, fail_on=None, first=0, fail_to_open=None, hang_on=None):
    """A child sink's opener: a FileRecorder and the step to replay from (`fail_to_open`: the
    error to raise instead; True: as if its library were not installed; `hang_on`: the
    recorder's, "open" included: the opening never returns)."""
    import os

    Path(str(path) + ".pid").write_text(str(os.getpid()))
    if hang_on == "open":
        FileRecorder(path, hang_on="open")._record("open")
    if fail_to_open is True:
        raise ModuleNotFoundError("No module named 'tracker'")
    if fail_to_open:
        raise fail_to_open
    return FileRecorder(path, fail_on, hang_on), first


_KEPT_FOLDERS: list = []


def open_recorder_keeping_a_temporary_folder(path, fail_to_open=None):
    """A child sink's opener that makes a temporary folder for the rest of its process, as
    wandb does as it is imported (tempfile removes it only in a normal interpreter exit);
    `fail_to_open`: as open_file_recorder's."""
    import tempfile

    _KEPT_FOLDERS.append(tempfile.TemporaryDirectory("library-media"))
    return open_file_recorder(path, fail_to_open=fail_to_open)


def write_pid(path):
    """A child's warm-up (child_sink.start_early): its process id to `path`."""
    import os

    Path(path).write_text(str(os.getpid()))


def fail_to_warm():
    """A child's warm-up that fails, as a tracker's import can."""
    raise ModuleNotFoundError("No module named 'tracker'")


def open_disk_full_tensorboard_sink(folder):
    """A child sink's opener: acr's TensorBoard sink, whose second scalars call fails as on a
    full disk (an OSError from the sink's own process, after its first call was written). The
    steps of its scalars calls go to FOLDER/scalars-calls.txt."""
    from acr.core.tracking import open_tensorboard_sink

    sink, first = open_tensorboard_sink(folder)
    write, calls = sink.scalars, []

    def scalars(step, values):
        calls.append(step)
        with open(Path(folder) / "scalars-calls.txt", "a") as fh:
            fh.write(f"{step}\n")
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        write(step, values)
    sink.scalars = scalars
    return sink, first


RUN_SLICE_SECONDS = 0.02  # how long kill_when lets the run go on between two looks
SLOW_SHARE = 0.05  # the share of the time a run gets while kill_when waits for `meanwhile`


def kill_when(proc: subprocess.Popen, ready, limit: float = 600, meanwhile=None) -> None:
    """SIGKILL the run at a moment when `ready()` holds, looked at with the run stopped
    (SIGSTOP: at most the instant the signal takes to land, no more work between the look and
    the kill). It goes on in slices of RUN_SLICE_SECONDS. `meanwhile`: a condition on the
    run's other processes (its tracker children, which a signal to the run's process does not
    stop) that must hold as well; while ready() holds and it does not, the run gets
    SLOW_SHARE of the time, so that a child that takes seconds to start (W&B) starts before
    the run ends however fast the run's steps are (a fine-tune of the tiny model went through
    12 epochs before W&B started, on the CI of 2026-12-05). Fails (the run killed all the
    same) when the run ends first or is not ready within `limit` seconds."""
    deadline = time.monotonic() + limit
    try:
        while True:
            proc.send_signal(signal.SIGSTOP)
            progressed = ready()
            if progressed and (meanwhile is None or meanwhile()):
                return
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline, f"not ready to be killed within {limit:g} s"
            if progressed:
                time.sleep(RUN_SLICE_SECONDS * (1 / SLOW_SHARE - 1))
            proc.send_signal(signal.SIGCONT)
            time.sleep(RUN_SLICE_SECONDS)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
