"""ptft: pretrain and fine-tune Transformer language models from one YAML file.

The Python API (`api.py`), for notebooks and scripts:

    import ptft_cli as ptft
    result = ptft.finetune("configs/demo/sentiment.yaml", overrides={"training.epochs": 1})
    print(result.run_dir, result.results["final"])

The functions load on first use, so `import ptft_cli` (and `ptft --help`) import no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ptft_cli.errors import ConfigError, DataError, PtftError, RunDirError

__version__ = "0.1.0"

_API = (
    "pretrain",
    "finetune",
    "evaluate",
    "predict",
    "explain",
    "compress",
    "validate",
    "env",
    "load_config",
    "Result",
)

__all__ = [
    "ConfigError",
    "DataError",
    "PtftError",
    "Result",
    "RunDirError",
    "__version__",
    "compress",
    "env",
    "evaluate",
    "explain",
    "finetune",
    "load_config",
    "predict",
    "pretrain",
    "validate",
]

if TYPE_CHECKING:
    from ptft_cli.api import (
        Result,
        compress,
        env,
        evaluate,
        explain,
        finetune,
        load_config,
        predict,
        pretrain,
        validate,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        from ptft_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'ptft_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
