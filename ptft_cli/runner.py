"""What each command runs: the CLI calls these with a validated config; each picks its task's recipe.

pretrain   mlm | mlm+nsp | clm        recipes/language_model.py
finetune   classification             recipes/classify.py
           clm (continued training)   recipes/language_model.py
evaluate / predict / validate         by task, as above
"""

from __future__ import annotations

from typing import Any

from ptft_cli.config import FINETUNE_TASKS, PRETRAIN_TASKS, Config
from ptft_cli.recipes.common import require_task


def pretrain(cfg: Config, *, overwrite: bool = False) -> dict[str, Any]:
    from ptft_cli.recipes import language_model

    require_task(cfg, "pretrain", PRETRAIN_TASKS)
    return language_model.train(cfg, overwrite=overwrite, command="pretrain")


def finetune(cfg: Config, *, overwrite: bool = False) -> dict[str, Any]:
    require_task(cfg, "finetune", FINETUNE_TASKS)
    if cfg.task == "classification":
        from ptft_cli.recipes import classify

        return classify.finetune(cfg, overwrite=overwrite)
    from ptft_cli.recipes import language_model

    return language_model.train(cfg, overwrite=overwrite, command="finetune")


def evaluate(cfg: Config) -> dict[str, Any]:
    if cfg.task == "classification":
        from ptft_cli.recipes import classify

        return classify.evaluate(cfg)
    from ptft_cli.recipes import language_model

    return language_model.evaluate(cfg)


def predict(cfg: Config) -> Any:
    if cfg.task == "classification":
        from ptft_cli.recipes import classify

        return classify.predict(cfg)
    from ptft_cli.recipes import language_model

    return language_model.predict(cfg)


def validate(cfg: Config) -> None:
    """Check config and data the way the task's commands would, without importing torch."""
    if cfg.task == "classification":
        from ptft_cli.recipes import classify

        return classify.validate(cfg)
    from ptft_cli.recipes import language_model

    return language_model.validate(cfg)
