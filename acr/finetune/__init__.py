"""`acr finetune`: dataset scan and captions (data), code cache (codes), trainable weights and
LoRA (adapters), the training recipe (train)."""
