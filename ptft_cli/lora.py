"""LoRA through peft: adapters on a frozen model, their checkpoints, and the merged model.

`models.build` calls `apply`; checkpoints of a LoRA run hold the adapters (peft's own files,
`adapter_model.safetensors` + `adapter_config.json`) and `load_adapter` restores them exactly; the
run's `model/` is the merged model (`merged_state_dict`, computed beside the live weights so that
training continues on bit-identical weights) and `adapter/` the adapters alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptft_cli.config import LoraConfig
from ptft_cli.errors import ConfigError

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def apply(model: Any, c: LoraConfig, task_type: str, where: str) -> Any:
    """`model` with LoRA adapters (`task_type`: peft's CAUSAL_LM or SEQ_CLS; a classifier's new
    head trains in full). Target modules that match nothing are a config error."""
    import peft

    targets = list(c.target_modules) if isinstance(c.target_modules, list) else c.target_modules
    config = peft.LoraConfig(
        r=c.r,
        lora_alpha=c.alpha,
        lora_dropout=c.dropout,
        target_modules=targets,
        task_type=getattr(peft.TaskType, task_type),
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        )
        raise ConfigError(
            f"LoRA target modules {c.target_modules!r} match no layer of {type(model).__name__}: "
            f"{str(e).splitlines()[0][:160]}",
            where=where,
            key="lora.target_modules",
            hint=f"use all-linear, or names of its linear layers: {', '.join(linear[:12])}",
        ) from None


def load_adapter(model: Any, folder: Path) -> None:
    """A checkpoint's adapter weights into a model with the same adapters."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(folder / ADAPTER_WEIGHTS))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise RuntimeError(f"checkpoint {folder} does not fit the adapters: unexpected {unexpected[:5]}")


def merged_state_dict(model: Any) -> dict[str, Any]:
    """The weights of the merged model (W + scale·B·A for every adapted layer; a trained head's copy
    in place of the original; a 4-bit base dequantised), under the plain model's names. The live
    model is not touched: merging in place and back would not restore its weights bit for bit."""
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    base = model.get_base_model()
    out: dict[str, Any] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key or ".original_module." in key or _quant_state(key):
            continue
        out[key.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")] = value
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                layer = module.get_base_layer()
                weight = dequantize_module_weight(layer) if _four_bit(layer) else layer.weight
                delta = module.get_delta_weight(module.active_adapters[0])
                out[f"{name}.weight"] = weight.detach() + delta.to(weight.dtype)
            elif _four_bit(module):  # a 4-bit layer without adapters
                out[f"{name}.weight"] = dequantize_module_weight(module).detach()
    return out


def _four_bit(module: Any) -> bool:
    return type(getattr(module, "weight", None)).__name__ == "Params4bit"


def _quant_state(key: str) -> bool:
    """bitsandbytes' per-weight quantisation state, saved beside a 4-bit weight."""
    return any(
        part in key
        for part in (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.")
    )


def save_adapter(model: Any, folder: Path) -> None:
    """peft's adapter files (adapter_config.json, adapter_model.safetensors) into `folder`."""
    model.save_pretrained(folder, safe_serialization=True)
