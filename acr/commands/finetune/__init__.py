"""`acr finetune`: dataset scan and captions (data), code cache (codes), trainable weights and
LoRA (adapters), the loss (loss), checkpoints (checkpoints), the recipe (train), what it
writes (outputs), and the multi-node job through submitit (launch)."""
from acr.commands.finetune.data import make_demo_data
from acr.commands.finetune.launch import submit_finetune
from acr.commands.finetune.train import run_finetune

__all__ = ["run_finetune", "make_demo_data", "submit_finetune"]
