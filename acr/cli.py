"""The `acr` command: thin typed commands that parse, validate and call a recipe.

Nothing here imports torch or audiocraft at module level, so `acr --help` stays fast; recipes are
imported inside the commands. A UsageError becomes its lines on stderr and exit code 2 (nothing is
written); any other failure is one line and exit code 1 (`--debug` shows the traceback).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
import typer.core

from acr import __version__
from acr.core import console
from acr.core.config.loader import schema_default
from acr.core.config.schema import ExperimentConfig, FinetuneConfig, GenerateConfig
from acr.core.distributed import launched_as_main
from acr.core.errors import UsageError
from acr.core.models import DEFAULT_CLAP, DEFAULT_CLIP, check_weights

app = typer.Typer(
    name="acr", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="acr: research toolkit for AudioCraft (MusicGen, AudioGen). Each command writes a run "
         "folder (config.yaml, meta.json, events.jsonl and its outputs).")

_state = {"debug": bool(os.environ.get("ACR_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"acr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = _state["debug"] or debug


def _guarded(work: Callable[[], Any]) -> Any:
    """Run a command body with acr's error conventions (exit 2 usage, 1 failure, 130 Ctrl-C)."""
    try:
        return work()
    except UsageError as exc:
        if _state["debug"]:
            raise
        for line in exc.lines:
            console.error(line)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        console.error("interrupted")
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except Exception as exc:
        if _state["debug"]:
            raise
        console.error(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        raise typer.Exit(1)


def _overrides(sets: Optional[list[str]], flags: dict[str, tuple[str, Any]]) -> list:
    """--set values first, then explicit flags (which win); each checked like a config line."""
    from acr.core.config.loader import flag_item, parse_set

    out = [parse_set(arg) for arg in sets or []]
    out += [(key, flag_item(value, flag)) for key, (flag, value) in flags.items()
            if value is not None]
    return out


def _resumed_config(schema: type, run_dir: Optional[Path], overrides: list,
                    force: bool = False) -> Any:
    """With --resume and no CONFIG: the run's own config with the flags and --set values
    applied (the recipe's resume check then refuses any that would change the results), or
    None when there are none (`force`: the run's own config even so). None too where RUN is
    no run of this command: its recipe then says what is wrong with the folder, rather than
    the schema errors of another command's config read as this one's."""
    from acr.core.config.loader import load_config
    from acr.core.config.schema import KINDS
    from acr.core.safe_load import read_json

    if run_dir is None or not (overrides or force) or \
            not (Path(run_dir) / "config.yaml").is_file():
        return None
    try:
        meta = read_json(Path(run_dir) / "meta.json")
    except (OSError, UsageError):  # (unreadable or unsafe: the recipe says so)
        return None
    if not isinstance(meta, dict) or KINDS.get(meta.get("command")) is not schema:
        return None
    return load_config(schema, Path(run_dir) / "config.yaml", overrides)


def _from_config_folder(path: str, config: Optional[Path]) -> str:
    """A path from a config file is relative to the file's folder (from flags: to the cwd)."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and config is not None:
        resolved = config.parent / resolved
    return str(resolved.resolve())


def _resolve_prompt_paths(prompt: Any, config: Optional[Path]) -> Any:
    """A prompt-set item with its melody / continuation / image path made absolute."""
    import dataclasses

    if hasattr(prompt, "image"):
        return dataclasses.replace(prompt, image=_from_config_folder(prompt.image, config))
    if isinstance(prompt, str) or not hasattr(prompt, "text"):
        return prompt
    melody = _from_config_folder(prompt.melody, config) if prompt.melody else None
    continuation = dataclasses.replace(
        prompt.continuation, audio=_from_config_folder(prompt.continuation.audio, config)) \
        if prompt.continuation else None
    return dataclasses.replace(prompt, melody=melody, continuation=continuation)


def _default(key: str) -> str:
    """`[default: X]` for a help text, read from the generate schema (never copied by hand)."""
    value = schema_default(GenerateConfig, key)
    return f"[default: {value:g}]" if isinstance(value, float) else f"[default: {value}]"


def _set_help(schema: type, key: str, example: str) -> str:
    """--set's help with an example key of the command's own schema (checked here: a key the
    schema lacks fails at import, and tests/test_cli.py loads every example)."""
    schema_default(schema, key)
    return f"Override a config key, e.g. --set {key}={example} (repeatable)."


SET_HELP = {"generate": _set_help(GenerateConfig, "params.temperature", "1.2"),
            "experiment": _set_help(ExperimentConfig, "defaults.temperature", "1.2"),
            "finetune": _set_help(FinetuneConfig, "lr", "3e-4"),
            "validate": "Override a config key as the command would, e.g. --set "
                        "params.top_k=50 (repeatable)."}
TRACK_HELP = ("Mirror the run in a tracker: tensorboard (RUN/tensorboard/) or wandb (RUN/wandb/; "
              "as WANDB_MODE says, else offline unless an API key is configured); repeatable. "
              "Config: `tracking:`.")
TRACKERS = ("tensorboard", "wandb")


def _tracking_overrides(track: Optional[list[str]]) -> list:
    """--track NAME as config overrides: tracking.tensorboard=true, or tracking.wandb set to
    {} (W&B's defaults) unless the config already configures it (see _keep_wandb)."""
    from acr.core.config.loader import flag_item

    out = []
    for name in track or []:
        if name not in TRACKERS:
            raise UsageError(f"--track {name}: not a tracker; use one of: {', '.join(TRACKERS)}")
        out.append(("tracking.tensorboard", flag_item(True, "--track")) if name == "tensorboard"
                   else ("tracking.wandb", flag_item({}, "--track")))
    return out


def _keep_wandb(cfg: Any, before: Any) -> Any:
    """--track wandb keeps the W&B settings (project, tags, ...) the config already had."""
    import dataclasses

    if cfg is None or before is None or before.tracking.wandb is None:
        return cfg
    return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking,
                                                                 wandb=before.tracking.wandb))


OUT_HELP = "Run folder to create (must be new or empty) [default: experiments/<name>/<time>-<id>]."
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps."
LAUNCHER_HELP = ("none | slurm | local (launcher.kind): none runs here; slurm submits through "
                 "submitit (the run folder must be on a shared filesystem); local takes the same "
                 "path in subprocesses on this machine.")
TIME_HELP = "Minutes each Slurm job may run (launcher.time)."
SLURM_OPT_HELP = ("More sbatch options, KEY=VALUE without the leading --, e.g. --slurm-opt "
                  "account=my-lab (repeatable; launcher.slurm).")


def _slurm_options(options: Optional[list[str]]) -> list:
    """--slurm-opt KEY=VALUE values as overrides of launcher.slurm.KEY."""
    from acr.core.config.loader import flag_item

    out = []
    for option in options or []:
        key, sep, value = option.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key.replace("-", "_").isidentifier() or not value.strip():
            raise UsageError(f"--slurm-opt {option}: expected KEY=VALUE, like --slurm-opt "
                             "account=my-lab")
        out.append((f"launcher.slurm.{key}", flag_item(value.strip(), "--slurm-opt")))
    return out


def _launcher_kind(schema: type, cfg: Any, resume: Optional[Path]) -> str:
    """The launcher a command runs with: the config's, else (a resume without flags) the run's."""
    recorded = cfg if cfg is not None else _resumed_config(schema, resume, [], force=True)
    return recorded.launcher.kind if recorded is not None else "none"


@app.command()
def generate(
    config: Optional[Path] = typer.Argument(None, help="Generate YAML (optional; flags win)."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p",
                                               help="A text prompt (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Model name, Hugging Face id or folder "
                                             f"{_default('model')}."),
    duration: Optional[float] = typer.Option(None, help=f"Seconds per clip {_default('params.duration')}."),
    seed: Optional[int] = typer.Option(None, help="Random seed [default: random, recorded]."),
    use_sampling: Optional[bool] = typer.Option(None, "--sampling/--greedy",
                                                help="Sample tokens, or take the argmax."),
    top_k: Optional[int] = typer.Option(None, help=f"Top-k sampling {_default('params.top_k')}."),
    top_p: Optional[float] = typer.Option(None, help="Top-p sampling; 0 = off "
                                                         f"{_default('params.top_p')}."),
    temperature: Optional[float] = typer.Option(None, help=f"Temperature {_default('params.temperature')}."),
    cfg_coef: Optional[float] = typer.Option(None, help="Guidance strength "
                                                          f"{_default('params.cfg_coef')}."),
    two_step_cfg: Optional[bool] = typer.Option(None, "--two-step-cfg/--one-step-cfg",
                                                help="Separate guidance passes."),
    extend_stride: Optional[float] = typer.Option(None, help="Window stride in seconds beyond "
                                                  "the model's window [default: model's]."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    loudness_lufs: Optional[float] = typer.Option(None, help="Normalise clips to this LUFS "
                                                  "(recorded in each sidecar)."),
    sample_format: Optional[str] = typer.Option(None, help="pcm16 | float32 "
                                                          f"{_default('sample_format')}."),
    name: Optional[str] = typer.Option(None, help=f"Run name {_default('name')}."),
    melody: Optional[Path] = typer.Option(None, help="Audio whose melody conditions every "
                                          "prompt (melody models only)."),
    continue_from: Optional[Path] = typer.Option(None, help="Audio file to continue."),
    prompt_seconds: Optional[float] = typer.Option(None, help="Seconds of --continue-from used "
                                                   "as the prompt "
                                                   f"{_default('continuation.prompt_seconds')}."),
    image: Optional[list[Path]] = typer.Option(None, "--image", help="An image to describe as "
                                               "the prompt with CLIP (repeatable); --prompt "
                                               "then steers the ranking."),
    weight: Optional[float] = typer.Option(None, help="With --image and --prompt: how much the "
                                           "image counts against the text, 0-1 "
                                           "[default: 0.5]."),
    clip_model: Optional[str] = typer.Option(None, help="CLIP model for --image: a Hugging Face "
                                             f"id or a local folder [default: {DEFAULT_CLIP}]."),
    vocabulary: Optional[Path] = typer.Option(None, help="Vocabulary YAML for --image "
                                              "[default: the shipped one]."),
    out: Optional[Path] = typer.Option(None, help=OUT_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP["generate"]),
) -> None:
    """Generate audio from text prompts (or images described by CLIP): one batch, written as
    WAVs with JSON sidecars."""
    def work() -> None:
        import dataclasses

        from acr.core.config.loader import load_config
        from acr.core.config.schema import check_kind
        from acr.core.runs import check_out_dir

        if config is not None:
            check_kind(config, "generate")
        flags = {"prompts": ("--prompt", prompt or None), "model": ("--model", model),
                 "params.duration": ("--duration", duration), "seed": ("--seed", seed),
                 "params.use_sampling": ("--sampling/--greedy", use_sampling),
                 "params.top_k": ("--top-k", top_k), "params.top_p": ("--top-p", top_p),
                 "params.temperature": ("--temperature", temperature),
                 "params.cfg_coef": ("--cfg-coef", cfg_coef),
                 "params.two_step_cfg": ("--two-step-cfg", two_step_cfg),
                 "params.extend_stride": ("--extend-stride", extend_stride),
                 "device": ("--device", device), "loudness_lufs": ("--loudness-lufs", loudness_lufs),
                 "sample_format": ("--sample-format", sample_format), "name": ("--name", name),
                 "melody": ("--melody", str(melody) if melody else None),
                 "continuation.audio": ("--continue-from",
                                        str(continue_from) if continue_from else None),
                 "continuation.prompt_seconds": ("--prompt-seconds", prompt_seconds),
                 "clip_model": ("--clip-model", clip_model),
                 "vocabulary": ("--vocabulary", str(vocabulary) if vocabulary else None)}
        overrides = _overrides(set_, flags)
        if image:
            overrides = [o for o in overrides if o[0] != "prompts"]
            overrides.append(("prompts", _image_items(image, prompt, weight)))
        elif weight is not None:
            raise UsageError("--weight: needs --image (it weighs the image against --prompt)")
        cfg = load_config(GenerateConfig, config, overrides)
        cfg = dataclasses.replace(cfg, prompts=[_resolve_prompt_paths(p, config)
                                                for p in cfg.prompts])
        if cfg.vocabulary:
            cfg = dataclasses.replace(cfg, vocabulary=_from_config_folder(
                cfg.vocabulary, None if vocabulary else config))
        base = None if melody or continue_from else config  # flags: relative to the cwd
        if cfg.melody:
            cfg = dataclasses.replace(cfg, melody=_from_config_folder(cfg.melody, base))
        if cfg.continuation:
            cfg = dataclasses.replace(cfg, continuation=dataclasses.replace(
                cfg.continuation, audio=_from_config_folder(cfg.continuation.audio, base)))
        check_out_dir(out)
        check_weights(cfg.weights)  # before torch loads: missing downloads are named at once

        from acr.commands.generate import run_generate

        run_dir = run_generate(cfg, out=out)
        clips = "a hybrid mix and its stems" if cfg.hybrid else f"{len(cfg.prompts)} clip(s)"
        console.result(f"wrote {clips} to {run_dir / 'samples'}")

    _guarded(work)


def _image_items(images: list[Path], prompts: Optional[list[str]], weight: Optional[float]
                 ) -> Any:
    """--image PATH... (with at most one --prompt, and --weight) as the `prompts` override: one
    {image, text, weight} item per image, its path made absolute (flags: relative to the cwd)."""
    from acr.core.config.loader import Item, Loc

    if prompts and len(prompts) > 1:
        raise UsageError("--prompt: with --image, give at most one --prompt (the text that "
                         "steers the ranking of every image)")
    loc = Loc("--image")
    items = []
    for path in images:
        item = {"image": Item(str(path.expanduser().resolve()), loc)}
        if prompts:
            item["text"] = Item(prompts[0], Loc("--prompt"))
        if weight is not None:
            item["weight"] = Item(weight, Loc("--weight"))
        items.append(Item(item, loc, key_locs={k: v.loc for k, v in item.items()}))
    return Item(items, loc)


class _DefaultRunGroup(typer.core.TyperGroup):
    """`acr experiment CONFIG` means `acr experiment run CONFIG`; `note` is the other command."""

    DEFAULT, USAGE, BARE = "run", "acr experiment [run] [CONFIG]", False  # BARE: no args too

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if (args and args[0] not in self.commands and args[0] not in ("--help", "-h")) or \
                (self.BARE and not args):
            args = [self.DEFAULT, *args]
        return super().parse_args(ctx, args)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """The group's options and commands, then those of `run`, the default command (which
        `acr experiment CONFIG [OPTIONS]` runs), so `acr experiment --help` shows them."""
        super().format_options(ctx, formatter)
        run = self.commands[self.DEFAULT]
        records = [r for r in (p.get_help_record(ctx) for p in run.get_params(ctx)
                               if p.name != "help") if r]
        with formatter.section(f"Options of `{self.USAGE}` (the default command)"):
            formatter.write_dl(records)


experiment_app = typer.Typer(
    cls=_DefaultRunGroup, no_args_is_help=True, rich_markup_mode=None,
    help="Research grids: prompt sets x parameter sets (x models) x samples, batched, seeded and "
         "resumable. `acr experiment CONFIG` runs one (same as `acr experiment run CONFIG`).")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("run")
def experiment_run(
    config: Optional[Path] = typer.Argument(None, help="Experiment YAML (optional with "
                                            "--resume: the run's own config is used)."),
    resume: Optional[Path] = typer.Option(None, help="Continue this run folder: keep finished "
                                          "samples, generate the missing ones. --device and "
                                          "the launcher may change; a change to anything else "
                                          "is refused."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    batch_size: Optional[str] = typer.Option(None, help="Samples per batch, or auto."),
    out: Optional[Path] = typer.Option(None, help=OUT_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP["experiment"]),
    launcher: Optional[str] = typer.Option(None, help=LAUNCHER_HELP),
    tasks: Optional[int] = typer.Option(None, help="Tasks of the Slurm job array (launcher.tasks"
                                        "); each generates a fixed share of the batches."),
    partition: Optional[str] = typer.Option(None, help="Slurm partition (launcher.partition)."),
    gpus_per_task: Optional[int] = typer.Option(None, help="GPUs per task "
                                                "(launcher.gpus_per_task)."),
    time_: Optional[int] = typer.Option(None, "--time", help=TIME_HELP),
    slurm_opt: Optional[list[str]] = typer.Option(None, "--slurm-opt", help=SLURM_OPT_HELP),
    wait: bool = typer.Option(False, "--wait", help="With a launcher: follow the tasks until "
                              "they end (else return once they are submitted)."),
    track: Optional[list[str]] = typer.Option(None, "--track", metavar="tensorboard|wandb",
                                              help=TRACK_HELP),
) -> None:
    """Run an experiment grid (or resume one) and write experiment.json with every sample."""
    def work() -> None:
        import dataclasses

        from acr.core.config.loader import flag_yaml, load_config
        from acr.core.config.schema import ExperimentConfig, check_kind
        from acr.core.runs import check_out_dir

        if config is None and resume is None:
            raise UsageError("give an experiment CONFIG, or --resume RUN_DIR")
        if resume is not None and out is not None:
            raise UsageError("--out and --resume do not go together: a resumed run stays in its "
                             "folder")
        if config is not None:
            check_kind(config, "experiment")
        overrides = _overrides(set_, {"device": ("--device", device),
                                      "launcher.kind": ("--launcher", launcher),
                                      "launcher.tasks": ("--tasks", tasks),
                                      "launcher.partition": ("--partition", partition),
                                      "launcher.gpus_per_task": ("--gpus-per-task",
                                                                 gpus_per_task),
                                      "launcher.time": ("--time", time_)})
        overrides += _slurm_options(slurm_opt)
        if batch_size is not None:  # a number or auto, read like a config value
            overrides.append(("batch_size", flag_yaml(batch_size, "--batch-size")))
        tracking = _tracking_overrides(track)
        cfg = load_config(ExperimentConfig, config, overrides + tracking) \
            if config is not None else \
            _resumed_config(ExperimentConfig, resume, overrides + tracking)
        if tracking:
            cfg = _keep_wandb(cfg, load_config(ExperimentConfig, config, overrides)
                              if config is not None else
                              _resumed_config(ExperimentConfig, resume, overrides, force=True))
        if config is not None:  # conditioning audio paths: relative to the config file's folder
            cfg = dataclasses.replace(cfg, prompt_sets={
                name: [_resolve_prompt_paths(p, config) for p in prompts]
                for name, prompts in cfg.prompt_sets.items()}, vocabulary=_from_config_folder(
                    cfg.vocabulary, config) if cfg.vocabulary else None)
        check_out_dir(out)
        if cfg is not None:
            check_weights(cfg.weights)  # before torch loads: missing downloads named at once

        if _launcher_kind(ExperimentConfig, cfg, resume) != "none":
            _launch_experiment(cfg, out, resume, wait)
            return
        _start_trackers(cfg, ExperimentConfig, resume)
        from acr.commands.experiment import run_experiment

        run_dir = run_experiment(cfg, out=out, resume=resume)
        if launched_as_main():
            console.result(f"wrote the experiment to {run_dir} (manifest: "
                           f"{run_dir / 'experiment.json'})")

    _guarded(work)


def _launch_experiment(cfg: Any, out: Optional[Path], resume: Optional[Path], wait: bool
                       ) -> None:
    """Submit the shares of an experiment (--launcher slurm | local); with --wait, follow them."""
    from acr.commands.experiment import submit_experiment, wait_for_run

    sub = submit_experiment(cfg, out=out, resume=resume)
    if sub.submitted:
        jobs = ", ".join(f"{share}: {job}" for share, job in sub.submitted.items())
        console.result(f"submitted {len(sub.submitted)} of {sub.shares} share(s) to "
                       f"{sub.kind} (jobs by share: {jobs}); run folder: {sub.run_dir}")
        console.info(f"follow it with: acr experiment status {sub.run_dir}")
    if not wait:
        return
    status = wait_for_run(sub.run_dir)
    if status != "completed":
        console.error(f"{sub.run_dir}: {status}; see acr experiment status {sub.run_dir}")
        raise typer.Exit(1)
    console.result(f"wrote the experiment to {sub.run_dir} (manifest: "
                   f"{sub.run_dir / 'experiment.json'})")


@experiment_app.command("status")
def experiment_status(
    run_dir: Path = typer.Argument(..., help="An experiment run folder."),
    log_lines: int = typer.Option(8, help="Lines of a failed task's log to show."),
) -> None:
    """Samples done of planned, each task's state (Slurm's too, and its log if it failed), and
    the time left."""
    def work() -> None:
        from acr.commands.experiment import experiment_status as status, render_status

        for line in render_status(status(run_dir, log_lines=log_lines)):
            console.result(line)

    _guarded(work)


@experiment_app.command("note")
def experiment_note(
    run_dir: Path = typer.Argument(..., help="An experiment run folder."),
    title: str = typer.Option(..., help="Short title of the finding."),
    text: str = typer.Option("", help="What was found."),
) -> None:
    """Record a finding with an experiment run (published by `acr export`)."""
    def work() -> None:
        from acr.commands.experiment import add_note

        add_note(run_dir, title, text)
        console.result(f"recorded finding {title!r} in {run_dir / 'findings.json'}")

    _guarded(work)


@app.command()
def finetune(
    config: Optional[Path] = typer.Argument(None, help="Fine-tune YAML (optional with --resume "
                                            "or --make-demo-data)."),
    resume: Optional[Path] = typer.Option(None, help="Continue this run folder from its last "
                                          "checkpoint. --device and the launcher may change, "
                                          "and --epochs N extends it; a change to anything "
                                          "else is refused."),
    make_demo_data: Optional[Path] = typer.Option(None, "--make-demo-data", help="Write a small "
                                                  "captioned dataset (chords, arpeggios, drum "
                                                  "loops; 44.1 kHz stereo) to this folder and "
                                                  "exit."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    epochs: Optional[int] = typer.Option(None, help="Epochs [default: from the config]."),
    out: Optional[Path] = typer.Option(None, help=OUT_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP["finetune"]),
    launcher: Optional[str] = typer.Option(None, help=LAUNCHER_HELP),
    nodes: Optional[int] = typer.Option(None, help="Nodes of the DDP job (launcher.nodes)."),
    gpus_per_node: Optional[int] = typer.Option(None, help="GPUs per node, a rank each "
                                                "(launcher.gpus_per_node)."),
    partition: Optional[str] = typer.Option(None, help="Slurm partition (launcher.partition)."),
    time_: Optional[int] = typer.Option(None, "--time", help=TIME_HELP),
    slurm_opt: Optional[list[str]] = typer.Option(None, "--slurm-opt", help=SLURM_OPT_HELP),
    wait: bool = typer.Option(False, "--wait", help="With a launcher: wait for the job to end "
                              "(else return once it is submitted)."),
    track: Optional[list[str]] = typer.Option(None, "--track", metavar="tensorboard|wandb",
                                              help=TRACK_HELP),
) -> None:
    """Fine-tune MusicGen / AudioGen on a folder of captioned audio; writes RUN/model/."""
    def work() -> None:
        import dataclasses

        from acr.core.config.loader import load_config
        from acr.core.config.schema import FinetuneConfig, check_kind
        from acr.core.runs import check_out_dir

        if make_demo_data is not None:
            from acr.commands.finetune import make_demo_data as make

            written = make(make_demo_data)
            console.result(f"wrote {len(written)} captioned clips and metadata.csv to "
                           f"{make_demo_data}")
            return
        if config is None and resume is None:
            raise UsageError("give a fine-tune CONFIG, or --resume RUN_DIR")
        if resume is not None and out is not None:
            raise UsageError("--out and --resume do not go together: a resumed run stays in its "
                             "folder")
        overrides = _overrides(set_, {"device": ("--device", device),
                                      "epochs": ("--epochs", epochs),
                                      "launcher.kind": ("--launcher", launcher),
                                      "launcher.nodes": ("--nodes", nodes),
                                      "launcher.gpus_per_node": ("--gpus-per-node",
                                                                 gpus_per_node),
                                      "launcher.partition": ("--partition", partition),
                                      "launcher.time": ("--time", time_)})
        overrides += _slurm_options(slurm_opt)
        tracking = _tracking_overrides(track)
        cfg = _resumed_config(FinetuneConfig, resume, overrides + tracking)
        if tracking and config is None:
            cfg = _keep_wandb(cfg, _resumed_config(FinetuneConfig, resume, overrides, force=True))
        if config is not None:
            check_kind(config, "finetune")
            cfg = load_config(FinetuneConfig, config, overrides + tracking)
            if tracking:
                cfg = _keep_wandb(cfg, load_config(FinetuneConfig, config, overrides))
            cfg = dataclasses.replace(cfg, data=_from_config_folder(cfg.data, config))
        check_out_dir(out)

        if _launcher_kind(FinetuneConfig, cfg, resume) != "none":
            _launch_finetune(cfg, out, resume, wait)
            return
        _start_trackers(cfg, FinetuneConfig, resume)
        from acr.commands.finetune import run_finetune

        run_dir = run_finetune(cfg, out=out, resume=resume)
        if launched_as_main():
            console.result(f"wrote the fine-tuned model to {run_dir / 'model'} (load it with "
                           f"`acr generate --model {run_dir / 'model'}`)")

    _guarded(work)


def _start_trackers(cfg: Any, schema: type, resume: Optional[Path]) -> None:
    """The trackers' child processes started before the command imports torch (rank 0 only:
    the other ranks do not track); a plain --resume (no CONFIG, no flag) starts those the
    run's own config asks for."""
    if not launched_as_main():
        return
    if cfg is None:
        cfg = _resumed_config(schema, resume, [], force=True)
    if cfg is not None:
        from acr.core.tracking import start_trackers

        start_trackers(cfg.tracking)


def _launch_finetune(cfg: Any, out: Optional[Path], resume: Optional[Path], wait: bool) -> None:
    """Submit a fine-tune as one DDP job (--launcher slurm | local); with --wait, wait for it."""
    from acr.commands.finetune import submit_finetune

    sub = submit_finetune(cfg, out=out, resume=resume)
    console.result(f"submitted job {sub.job} ({sub.ranks} rank(s)) to {sub.kind}; run folder: "
                   f"{sub.run_dir} (logs in {sub.run_dir / 'launcher'})")
    if not wait:
        return
    sub.handle.wait()
    meta = sub.run_dir / "meta.json"
    status = json.loads(meta.read_text()).get("status") if meta.is_file() else "not started"
    if status != "completed":
        console.error(f"{sub.run_dir}: {status}; see the job's log in {sub.run_dir / 'launcher'}")
        raise typer.Exit(1)
    console.result(f"wrote the fine-tuned model to {sub.run_dir / 'model'}")


@app.command()
def analyze(
    path: Path = typer.Argument(..., help="A run folder of acr experiment / generate, or any "
                                "folder of audio files (wav, flac, ogg, mp3, aiff)."),
    out: Optional[Path] = typer.Option(None, help="Where to write [default: PATH/analysis]."),
    reference: Optional[Path] = typer.Option(None, help="A folder of reference audio: Fréchet "
                                             "distances are measured to it (default: to the "
                                             "baseline setting)."),
    model_metrics: bool = typer.Option(True, "--model-metrics/--no-model-metrics",
                                       help="Try CLAP alignment and FAD (needs the CLAP weights "
                                            "in the local Hugging Face cache)."),
    clap_model: Optional[str] = typer.Option(None, help=f"CLAP model: a Hugging Face id or a "
                                             f"local folder [default: {DEFAULT_CLAP}]."),
    workers: Optional[int] = typer.Option(None, min=1, help="Processes for the per-clip "
                                          "features and the plots [default: one per CPU]."),
) -> None:
    """Per-clip metrics, per-setting statistics, plots and a report for a run or audio folder."""
    def work() -> None:
        from acr.commands.analyze import run_analysis

        folder = run_analysis(path, out=out, reference=reference, model_metrics=model_metrics,
                              clap_model=clap_model, workers=workers)
        console.result(f"wrote the analysis to {folder} (report: {folder / 'report.md'})")

    _guarded(work)


listen_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None,
    help="Blind listening tests in the browser: build a test from a run, collect answers (import "
         "downloaded files, or serve the page and save submissions), browse a run's clips; "
         "`acr analyze RUN` analyses the answers next to the metrics.")
app.add_typer(listen_app, name="listen")


@listen_app.command("build")
def listen_build(
    run_dir: Path = typer.Argument(..., help="A run folder of acr experiment (or generate)."),
    design: str = typer.Option("mos", help="mos (1-5 ratings) | ab (pairwise preference) | "
                               "mushra (0-100, all settings of a prompt at once)."),
    per_rater: Optional[int] = typer.Option(None, help="Trials per rater, attention checks not "
                                            "counted [default: every trial of the pool]."),
    raters: int = typer.Option(10, help="Rater slots: trial orders drawn from the seed."),
    seed: Optional[int] = typer.Option(None, help="Seed of the trial orders and sides "
                                       "[default: random, recorded in design.json]."),
    settings: Optional[str] = typer.Option(None, help="Comma-separated settings to test "
                                           "[default: all]."),
    reference: Optional[Path] = typer.Option(None, help="MUSHRA: folder of references, "
                                             "<prompt set>/<prompt index>.wav, for the hidden "
                                             "reference and the 3.5 kHz anchor."),
    name: Optional[str] = typer.Option(None, help="Test folder name under RUN/listening/ "
                                       "[default: the design]."),
    no_preference: bool = typer.Option(True, "--no-preference/--forced-choice",
                                       help="AB: offer 'no preference', or force a choice."),
) -> None:
    """Build a blind test page: RUN/listening/<name>/ (index.html, audio/, design.json)."""
    def work() -> None:
        from acr.commands.listen import build_test

        wanted = [s.strip() for s in settings.split(",") if s.strip()] if settings else None
        folder = build_test(run_dir, design, per_rater=per_rater, raters=raters, seed=seed,
                            settings=wanted, reference=reference, name=name,
                            no_preference=no_preference)
        console.result(f"wrote the {design} test to {folder} (open {folder / 'index.html'}, or "
                       f"acr listen serve {run_dir})")

    _guarded(work)


@listen_app.command("import")
def listen_import(
    run_dir: Path = typer.Argument(..., help="The run folder the test was built in."),
    files: list[Path] = typer.Argument(..., help="Answer files downloaded from the page."),
    name: Optional[str] = typer.Option(None, help="The test [default: named in each file]."),
) -> None:
    """Check answer files against the test's design and store them in its responses/."""
    def work() -> None:
        from acr.commands.listen import import_responses

        stored = import_responses(run_dir, files, name=name)
        new = sum(s.new for s in stored)
        for item in stored:
            if not item.new:
                console.info(f"{item.path.name}: already imported")
        console.result(f"imported {new} answer file(s)" + (
            f" ({len(stored) - new} already there)" if new < len(stored) else "")
            + f" into {stored[0].path.parent}")

    _guarded(work)


@listen_app.command("serve")
def listen_serve(
    run_dir: Path = typer.Argument(..., help="The run folder the test was built in."),
    name: Optional[str] = typer.Option(None, help="The test [default: the run's only test]."),
    port: int = typer.Option(8000, help="Port (0: any free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; another address than "
                             "this machine's loopback opens the test to the network."),
) -> None:
    """Serve a test's page and save every submission (until Ctrl-C)."""
    def work() -> None:
        from acr.commands.listen import make_server, serve_test

        server = make_server(run_dir, name=name, host=host, port=port)
        bound_host, bound_port = server.server_address[:2]
        console.result(f"serving {server.design.name} on http://{bound_host}:{bound_port}/ "
                       "(Ctrl-C to stop)")
        serve_test(server)

    _guarded(work)


@listen_app.command("browse")
def listen_browse(
    run_dir: Path = typer.Argument(..., help="A run folder."),
) -> None:
    """Write a non-blind run browser: players, spectrograms and metrics, prompt x setting."""
    def work() -> None:
        from acr.commands.listen import build_browser

        page = build_browser(run_dir)
        console.result(f"wrote the run browser to {page}")

    _guarded(work)


@app.command()
def export(
    run_dirs: Optional[list[Path]] = typer.Argument(None, help="Run folders to package."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="The zip to write "
                                          "[default: RUN_DIR.zip beside the first run]."),
    samples: str = typer.Option("all", help="all | none: include the audio samples."),
    audio_format: str = typer.Option("wav", help="wav | flac (16- and 24-bit samples "
                                     "re-encoded losslessly; float32 samples stay WAV)."),
    include_model: bool = typer.Option(False, "--include-model", help="Include a fine-tune's "
                                       "model/ (release layout; never optimizer state)."),
    force: bool = typer.Option(False, "--force", help="Export running or failed runs, and "
                               "replace an existing zip."),
    verify_zip: Optional[Path] = typer.Option(None, "--verify", help="Check a package against "
                                              "its MANIFEST.json instead of exporting."),
) -> None:
    """Package runs into a shareable, verifiable zip (README, records, analysis, samples)."""
    def work() -> None:
        from acr.commands.export import export_runs, verify

        if verify_zip is not None:
            problems = verify(verify_zip)
            for problem in problems:
                console.error(f"{verify_zip}: {problem}")
            if problems:
                raise typer.Exit(1)
            console.result(f"{verify_zip}: ok (every entry matches MANIFEST.json)")
            return
        if not run_dirs:
            raise UsageError("give one or more RUN_DIRs to export, or --verify ZIP")
        if samples not in ("all", "none"):
            raise UsageError(f"--samples {samples}: use all or none")
        if audio_format not in ("wav", "flac"):
            raise UsageError(f"--audio-format {audio_format}: use wav or flac")
        path, summary = export_runs(run_dirs, output, samples, audio_format, include_model,
                                    force)
        sizes = ", ".join(f"{kind} {size / 1e6:.1f} MB" for kind, size in
                          sorted(summary["kinds"].items()))
        console.info(f"{summary['entries']} entries from {len(summary['runs'])} run(s): {sizes}")
        console.result(f"wrote {path} ({summary['bytes'] / 1e6:.1f} MB)")

    _guarded(work)


@app.command("describe-image")
def describe_image(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, GIF, WebP, ...)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Text that steers the "
                                         "ranking (blended with each image by --weight)."),
    weight: float = typer.Option(0.5, min=0.0, max=1.0, help="How much the image counts "
                                 "against --prompt (1: the image alone)."),
    section: str = typer.Option("music", help="Vocabulary section: music (MusicGen) | sfx "
                                "(AudioGen)."),
    vocabulary: Optional[Path] = typer.Option(None, help="Vocabulary YAML [default: the "
                                              "shipped one]."),
    clip_model: str = typer.Option(DEFAULT_CLIP, help="CLIP model: a Hugging Face id (local "
                                   "cache) or a local folder."),
    top: int = typer.Option(3, min=1, help="Phrases shown per slot."),
    json_output: bool = typer.Option(False, "--json", help="Print the records as JSON."),
) -> None:
    """Show the prompts images become (CLIP-ranked phrases per slot), without generating."""
    def work() -> None:
        if section not in ("music", "sfx"):
            raise UsageError(f"--section {section}: use music or sfx")
        from acr.commands.describe_image import describe

        describe(images, prompt, weight, section, str(vocabulary) if vocabulary else None,
                 clip_model, top, json_output)

    _guarded(work)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="A config YAML to check."),
    kind: Optional[str] = typer.Option(None, help="Config kind [default: detected from keys]."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP["validate"]),
) -> None:
    """Check a config file (all problems at once) without running anything."""
    def work() -> None:
        from acr.core.config.loader import load_config
        from acr.core.config.schema import KINDS, config_kind
        from acr.core.preflight import config_problems

        if kind is not None and kind not in KINDS:
            raise UsageError(f"--kind {kind}: unknown config kind; use one of: {', '.join(KINDS)}")
        if config.is_dir():
            raise UsageError(f"{config}: is a folder; give a config YAML file (a run folder's "
                             f"is {config / 'config.yaml'})")
        if not config.is_file():
            raise UsageError(f"{config}: no such file; check the path")
        chosen = kind or config_kind(config)
        cfg = load_config(KINDS[chosen], config, _overrides(set_, {}))
        problems = config_problems(cfg, chosen, config)
        if problems:
            raise UsageError(*problems)
        console.result(f"{config}: ok ({chosen} config)")

    _guarded(work)


@app.command()
def doctor(
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    network: bool = typer.Option(True, "--network/--no-network", help="Check whether the "
                                 "Hugging Face hub can be reached."),
) -> None:
    """Environment report for bug reports: versions, devices, what fits, caches, the hub."""
    def work() -> None:
        import json

        from acr.commands.doctor import render, report

        data = report(check_network=network)
        if json_output:
            console.result(json.dumps(data, indent=2))
        else:
            for line in render(data):
                console.result(line)

    _guarded(work)


@app.command()
def models() -> None:
    """List the model names acr knows and where the built-in tiny and random models are cached."""
    from acr.core.models import RANDOM, RANDOM_LABEL, SHORT_NAMES, TINY, tiny_model_dir

    for short, (family, rate) in TINY.items():
        console.result(f"{short:28} built-in tiny {family} ({rate} Hz), cached in "
                       f"{tiny_model_dir(short)}")
    for short, (family, rate, size) in RANDOM.items():
        console.result(f"{short:28} {family}-{size}'s architecture ({rate} Hz), {RANDOM_LABEL} "
                       f"(text: a lookup table instead of T5); built on first use in "
                       f"{tiny_model_dir(short)}")
    for short, (hub_id, family) in SHORT_NAMES.items():
        console.result(f"{short:28} {hub_id} ({family})" + (
            "; not supported: acr drives MusicGen and AudioGen only" if family == "magnet"
            else ""))
    console.result("Also: any Hugging Face id (owner/name) or a local folder in AudioCraft's "
                   "release layout (state_dict.bin + compression_state_dict.bin).")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


class _DefaultListGroup(_DefaultRunGroup):
    """`acr runs [FOLDER]` means `acr runs list [FOLDER]`; `compare` is the other command."""

    DEFAULT, USAGE, BARE = "list", "acr runs [list] [FOLDER]", True


runs_app = typer.Typer(
    cls=_DefaultListGroup, rich_markup_mode=None,
    help="Find runs and compare them, from their records (meta.json, config.yaml, "
         "summary.json). `acr runs [FOLDER]` lists the runs below FOLDER (same as `acr runs "
         "list FOLDER`).")
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(
    folder: Path = typer.Argument(Path("experiments"), help="Folder to search for run "
                                  "folders."),
    status: Optional[list[str]] = typer.Option(None, metavar="STATUS", help="Only runs with "
                                               "this status: "
                                               "running, completed, failed, interrupted "
                                               "(repeatable)."),
    command: Optional[list[str]] = typer.Option(None, metavar="COMMAND", help="Only runs of "
                                                "this command: "
                                                "experiment, finetune, generate "
                                                "(repeatable)."),
    since: Optional[str] = typer.Option(None, metavar="WHEN", help="Only runs started since a "
                                        "date "
                                        "(2026-11-01), a UTC time (2026-11-01T12:00) or an age "
                                        "(30m, 12h, 7d, 2w)."),
    name: Optional[str] = typer.Option(None, metavar="GLOB", help="Only runs whose name or "
                                       "folder matches "
                                       "this glob, e.g. 'emotion-*'."),
    json_: bool = typer.Option(False, "--json", help="Print the rows as JSON (for scripts)."),
) -> None:
    """One row per run: name, command, status, start, duration, model(s), samples or epochs,
    device, and for analysed experiments the baseline setting's key metric means."""
    def work() -> None:
        from acr.commands.runs import list_runs, rows_as_json, show_runs

        rows = list_runs(folder, status=status, command=command, since=since, name=name)
        if json_:
            typer.echo(rows_as_json(rows))
        else:
            show_runs(rows)

    _guarded(work)


@runs_app.command("compare")
def runs_compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run folders."),
    json_: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """The runs' configs diffed key by key, and their shared metrics side by side per
    setting."""
    def work() -> None:
        from acr.commands.runs import compare_runs, comparison_as_json, show_comparison

        comparison = compare_runs(run_dirs)
        if json_:
            typer.echo(comparison_as_json(comparison))
        else:
            show_comparison(comparison)

    _guarded(work)
