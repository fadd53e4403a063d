"""ptft: pretrain and fine-tune Transformer language models from one YAML file."""

__version__ = "0.1.0"
