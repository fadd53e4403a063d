"""Compressing a trained model: structured pruning, low-rank (SVD) factorisation, int8 quantization.

What was done is recorded in the model's config.json under `ptft_compression`, so that `models.py`
rebuilds the same structure before it loads the weights (the record travels with `save_pretrained`,
so a recovery fine-tune's `model/` keeps it too):

    {"conv1d_as_linear": true,                                     # GPT-2's Conv1D layers became nn.Linear
     "pruned_heads": {"0": [1]},                                   # by block, after layer dropping
     "low_rank": {"bert.encoder.layer.0.attention.self.query": 96},  # module -> rank
     "quantize": "int8"}                                             # applied when loaded

Dropped layers need no record: the config's layer count says it, and plain transformers loads them.
Quantized linear weights are stored as int8 with their scales (`<name>.weight` int8,
`<name>.weight_scale`, `<name>.weight_zero_point`), so the file is about a quarter of fp32's size.

The checks in `check_plan` need no torch (they read config.json); the rest runs on a loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptft_cli.config import Config
from ptft_cli.errors import ConfigError

RECORD = "ptft_compression"
# Architectures whose attention is BERT's (query/key/value + attention.output.dense), where heads can be removed.
HEAD_PRUNING = ("bert", "roberta", "electra", "xlm-roberta", "camembert")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_COUNT_KEYS = ("num_attention_heads", "n_head", "n_heads")


@dataclass
class Plan:
    """What `ptft compress` does to the model, checked against its config.json."""

    drop_layers: list[int]
    heads: dict[int, list[int]]  # original block number -> heads to remove
    rank_ratio: float | None
    energy: float | None
    modules: list[str] | None
    quantize: str | None

    @property
    def low_rank(self) -> bool:
        return self.rank_ratio is not None or self.energy is not None

    @property
    def structural(self) -> bool:
        return self.low_rank or bool(self.drop_layers) or bool(self.heads)

    def summary(self) -> str:
        parts = []
        if self.drop_layers:
            parts.append(f"drop layers {self.drop_layers}")
        if self.heads:
            parts.append(f"prune heads {self.heads}")
        if self.rank_ratio is not None:
            parts.append(f"low-rank {self.rank_ratio:g} of the parameters")
        if self.energy is not None:
            parts.append(f"low-rank keeping {self.energy:g} of the energy")
        if self.quantize:
            parts.append(f"quantize {self.quantize}")
        return ", ".join(parts)


def _first_int(values: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    return next((values[k] for k in keys if isinstance(values.get(k), int)), None)


def check_plan(cfg: Config, values: dict[str, Any] | None) -> Plan:
    """The compress section against the model's config.json (None: a Hub id, checked once loaded).
    Raises ConfigError for anything that cannot be done."""
    c = cfg.compress

    def bad(key: str, message: str, hint: str) -> ConfigError:
        return ConfigError(message, where=cfg.where(f"compress.{key}"), key=f"compress.{key}", hint=hint)

    plan = Plan(
        sorted(set(c.prune.layers)),
        {k: sorted(set(v)) for k, v in (c.prune.heads or {}).items()},
        c.low_rank.rank_ratio,
        c.low_rank.energy,
        c.low_rank.modules,
        c.quantize,
    )
    if plan.rank_ratio is not None and plan.energy is not None:
        raise bad("low_rank", "set rank_ratio or energy, not both", "keep one of them")
    if plan.modules is not None and not plan.low_rank:
        raise bad(
            "low_rank.modules", "names layers to factorise, but no rank is set", "set low_rank.rank_ratio"
        )
    if not plan.structural and not plan.quantize:
        raise ConfigError(
            "nothing to compress",
            where=cfg.where("compress"),
            key="compress",
            hint="set compress.quantize, compress.low_rank.rank_ratio or compress.prune",
        )
    if c.recover and not plan.structural:
        raise bad(
            "recover",
            "a recovery fine-tune follows pruning or low-rank, and neither is set",
            "set recover: false",
        )
    if values is None:
        return plan
    if values.get(RECORD):
        raise ConfigError(
            "the model was already compressed by ptft",
            where=cfg.where("compress.model"),
            key="compress.model",
            hint="compress the original model, with every option at once",
        )
    layers = _first_int(values, LAYER_COUNT_KEYS)
    heads = _first_int(values, HEAD_COUNT_KEYS)
    if layers is not None:
        outside = [i for i in plan.drop_layers + list(plan.heads) if not 0 <= i < layers]
        if outside:
            key = "prune.layers" if any(i in plan.drop_layers for i in outside) else "prune.heads"
            raise bad(key, f"block {outside[0]} does not exist", f"the model has blocks 0..{layers - 1}")
        if len(plan.drop_layers) >= layers:
            raise bad("prune.layers", f"drops all {layers} blocks", "keep at least one block")
    if plan.heads:
        model_type = values.get("model_type")
        if model_type not in HEAD_PRUNING:
            raise bad(
                "prune.heads",
                f"ptft prunes heads of BERT-style attention only, not {model_type}",
                f"supported: {', '.join(HEAD_PRUNING)}; drop whole layers with prune.layers",
            )
        for layer, removed in plan.heads.items():
            if layer in plan.drop_layers:
                raise bad(
                    "prune.heads", f"block {layer} is dropped by prune.layers", "prune heads of kept blocks"
                )
            wrong = [h for h in removed if heads is not None and not 0 <= h < heads]
            if wrong:
                raise bad("prune.heads", f"block {layer} has no head {wrong[0]}", f"heads are 0..{heads - 1}")
            if heads is not None and len(removed) >= heads:
                raise bad("prune.heads", f"removes every head of block {layer}", "keep at least one head")
    return plan


# ---------------------------------------------------------------------------------------------
# Structure


def _block_list(model: Any) -> tuple[Any, str]:
    """The transformer blocks (the longest ModuleList) and their name in the model."""
    import torch

    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ConfigError(f"{type(model).__name__} has no list of transformer blocks", key="compress.prune")
    name, blocks = max(lists, key=lambda item: len(item[1]))
    return blocks, name


def _set_module(model: Any, name: str, module: Any) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def prune_heads(model: Any, heads: dict[int, list[int]]) -> None:
    """Remove attention heads of BERT-style blocks (query/key/value rows, output.dense columns);
    transformers 5 dropped `prune_heads`, so this does what it did."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    blocks, _ = _block_list(model)
    for layer, removed in heads.items():
        attention = blocks[layer].attention
        own = attention.self
        size = own.attention_head_size
        keep = [h for h in range(own.num_attention_heads) if h not in removed]
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in keep]).long()
        own.query = prune_linear_layer(own.query, index)
        own.key = prune_linear_layer(own.key, index)
        own.value = prune_linear_layer(own.value, index)
        attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
        own.num_attention_heads = len(keep)
        own.all_head_size = len(keep) * size


def drop_layers(model: Any, drop: list[int]) -> None:
    """Remove whole blocks; the config's layer count follows, so plain transformers loads the result."""
    import torch

    blocks, name = _block_list(model)
    kept = [b for i, b in enumerate(blocks) if i not in drop]
    _set_module(model, name, torch.nn.ModuleList(kept))
    for i, block in enumerate(kept):  # decoders number their blocks for the KV cache
        for m in block.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = i
    config = model.config
    for key in LAYER_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, len(kept))
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(blocks):
        config.layer_types = [t for i, t in enumerate(types) if i not in drop]


def conv1d_to_linear(model: Any) -> bool:
    """GPT-2's `Conv1D` layers (x·W + b, W stored in × out) as the nn.Linear they compute, so that
    low-rank and int8 reach them. Returns whether there were any (recorded as `conv1d_as_linear`)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    names = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    for name in names:
        conv = model.get_submodule(name)
        in_f, out_f = conv.weight.shape
        linear = torch.nn.Linear(in_f, out_f)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
            linear.bias.copy_(conv.bias)
        _set_module(model, name, linear)
    return bool(names)


def linear_names(model: Any) -> list[str]:
    """The linear layers inside the transformer blocks (what low-rank factorises by default)."""
    import torch

    _, prefix = _block_list(model)
    return [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefix + ".")
    ]


def choose_modules(model: Any, wanted: list[str] | None, where: str) -> list[str]:
    """The block linears `wanted` names (a name matches any module it ends in); every name must match."""
    candidates = linear_names(model)
    if wanted is None:
        return candidates
    chosen: list[str] = []
    for w in wanted:
        hits = [n for n in candidates if n == w or n.endswith("." + w)]
        if not hits:
            short = sorted({".".join(n.split(".")[-2:]) for n in candidates})
            raise ConfigError(
                f"{w!r} names no linear layer in the model's blocks",
                where=where,
                key="compress.low_rank.modules",
                hint=f"names here: {', '.join(short[:8])}",
            )
        chosen += [n for n in hits if n not in chosen]
    return chosen


def _factorised(in_features: int, out_features: int, rank: int, bias: bool) -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(in_features, rank, bias=False), torch.nn.Linear(rank, out_features, bias=bias)
    )


def low_rank(model: Any, plan: Plan, names: list[str]) -> dict[str, int]:
    """SVD-factorise each named Linear W (out × in) into B·A with A = √S·Vᵀ (r × in), B = U·√S (out × r).
    Returns module -> rank for the layers that were factorised (a layer that would not shrink stays)."""
    import torch

    ranks: dict[str, int] = {}
    for name in names:
        layer = model.get_submodule(name)
        w = layer.weight.detach().float()
        out_f, in_f = w.shape
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        if plan.rank_ratio is not None:
            rank = max(1, int(plan.rank_ratio * in_f * out_f / (in_f + out_f)))
        else:
            energy = torch.cumsum(s**2, 0) / (s**2).sum()
            rank = int(torch.searchsorted(energy, torch.tensor(plan.energy or 1.0)).item()) + 1
        if rank * (in_f + out_f) >= in_f * out_f:
            continue
        root = s[:rank].sqrt()
        new = _factorised(in_f, out_f, rank, layer.bias is not None)
        with torch.no_grad():
            new[0].weight.copy_(root[:, None] * vh[:rank])
            new[1].weight.copy_(u[:, :rank] * root[None, :])
            if layer.bias is not None:
                new[1].bias.copy_(layer.bias)
        _set_module(model, name, new)
        ranks[name] = rank
    return ranks


def rebuild(model: Any, record: dict[str, Any]) -> None:
    """Give a model built from a compressed config the structure its weights were saved in."""
    if record.get("conv1d_as_linear"):
        conv1d_to_linear(model)
    if record.get("pruned_heads"):
        prune_heads(model, {int(k): v for k, v in record["pruned_heads"].items()})
    for name, rank in (record.get("low_rank") or {}).items():
        layer = model.get_submodule(name)
        _set_module(
            model, name, _factorised(layer.in_features, layer.out_features, rank, layer.bias is not None)
        )


# ---------------------------------------------------------------------------------------------
# Quantization


def quantize(model: Any, mode: str) -> Any:
    """Dynamic int8 (torch; activations quantized per batch) or weight-only int8 (torchao) on every
    nn.Linear, in place; returns the model."""
    import torch

    model.eval()
    if mode == "int8":
        import warnings

        with warnings.catch_warnings():  # torch.ao's eager quantization warns that it moves to torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, inplace=True
            )
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise ConfigError(
            "compress.quantize int8_weight needs torchao", key="compress.quantize", hint="pip install torchao"
        ) from None
    quantize_(model, Int8WeightOnlyConfig())
    return model


def _int8_rows(w: Any) -> tuple[Any, Any]:
    """Symmetric per-row int8 of a float weight: (int8 values, fp32 scales)."""
    import torch

    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.float()


def quantized_state(model: Any, mode: str) -> dict[str, Any]:
    """The weights to save for a model about to be quantized (still float): every nn.Linear's weight
    as int8 plus its scales (what `quantize` would compute), the rest as they are. Tied tensors once."""

    import warnings

    with warnings.catch_warnings():  # torch.ao's eager quantization warns that it moves to torchao
        warnings.simplefilter("ignore")
        return _quantized_state(model, mode)


def _quantized_state(model: Any, mode: str) -> dict[str, Any]:
    import torch

    quant = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    state: dict[str, Any] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        module, _, leaf = key.rpartition(".")
        if module in quant and leaf == "weight":
            if mode == "int8":  # exactly torch's per-channel observer, so loading reproduces the model
                observer = torch.ao.quantization.per_channel_dynamic_qconfig.weight()
                observer(tensor.float())
                scale, zero = observer.calculate_qparams()
                q = torch.quantize_per_channel(tensor.float(), scale.double(), zero.long(), 0, torch.qint8)
                state[key] = q.int_repr().contiguous()
                state[f"{module}.weight_scale"] = q.q_per_channel_scales().float()
                state[f"{module}.weight_zero_point"] = q.q_per_channel_zero_points().to(torch.int32)
            else:
                values, scale = _int8_rows(tensor.float())
                state[key], state[f"{module}.weight_scale"] = values, scale
        else:
            state[key] = tensor.detach().contiguous()
    return state


def load_quantized(model: Any, state: dict[str, Any], mode: str) -> Any:
    """A float model built with the saved structure, given the saved int8 weights, then quantized."""
    import torch

    float_state = {}
    int8: dict[str, tuple[Any, Any, Any]] = {}
    for key, tensor in state.items():
        if key.endswith((".weight_scale", ".weight_zero_point")):
            continue
        module = key.rpartition(".")[0]
        if tensor.dtype == torch.int8:
            scale = state[f"{module}.weight_scale"]
            zero = state.get(f"{module}.weight_zero_point")
            int8[module] = (tensor, scale, zero)
            float_state[key] = (tensor.float() - (zero.float()[:, None] if zero is not None else 0)) * scale[
                :, None
            ]
        else:
            float_state[key] = tensor
    _load_strict(model, float_state)
    model = quantize(model, mode)
    if mode == "int8":  # the saved int8 values exactly, not a second rounding of their float form
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, (values, scale, zero) in int8.items():
                layer = model.get_submodule(name)
                q = torch._make_per_channel_quantized_tensor(values, scale.double(), zero.long(), 0)
                layer.set_weight_bias(q, layer.bias())
    return model


def _load_strict(model: Any, state: dict[str, Any]) -> None:
    """Load a state dict; every tensor but a tied copy must be there and fit."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(
            f"the weights do not fit the model: missing {untied[:3]}, unexpected {unexpected[:3]}"
        )


def load(model: Any, ref: str) -> Any:
    """A model saved by `ptft compress`, given as the bare network `models.py` built from its config:
    the recorded structure, then its weights (and quantized, if it was)."""
    from safetensors.torch import load_file

    record = getattr(model.config, RECORD)
    rebuild(model, record)
    state = load_file(str(Path(ref) / "model.safetensors"))
    if record.get("quantize"):
        return load_quantized(model, state, record["quantize"])
    _load_strict(model, state)
    return model.eval()


def record_of(model: Any) -> dict[str, Any]:
    return getattr(model.config, RECORD, None) or {}


def parameter_count(model: Any) -> int:
    """Parameters, tied ones once; a dynamic int8 layer's packed weights and biases included."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    for m in model.modules():
        packed = getattr(m, "_packed_params", None)
        if packed is not None and hasattr(m, "weight") and callable(m.weight):
            total += m.weight().numel() + (m.bias().numel() if m.bias() is not None else 0)
    return total


def weight_bytes(folder: Path) -> int:
    """Size on disk of a model directory's weight files."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) + sum(
        p.stat().st_size for p in folder.glob("pytorch_model*.bin")
    )
