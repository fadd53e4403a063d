"""Device and precision: what `auto` means on this machine, and the autocast context for it."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import sys
from dataclasses import dataclass

import torch

from ptft_cli.distributed import SINGLE, World
from ptft_cli.errors import ConfigError


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16: what autocast runs the forward pass in
    why: str  # one line on why `auto` chose this, for the run header
    # What `evaluate` and `predict` run in. Evaluation during training uses it too, so every
    # validation figure of a run (the best one included) is the one `ptft evaluate` reproduces.
    eval_precision: str = "fp32"
    world: World = SINGLE  # this process among a distributed run's (evaluation is sharded over them)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for training forward passes; weights and optimizer state stay fp32."""
        return self._autocast(self.precision)

    def eval_autocast(self) -> contextlib.AbstractContextManager:
        """The precision of evaluation and prediction forward passes."""
        return self._autocast(self.eval_precision)

    def _autocast(self, precision: str) -> contextlib.AbstractContextManager:
        dtype = _DTYPES.get(precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
        return self.precision == "fp16"


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(device: str, precision: str, *, training: bool, where: str = "<config>") -> Hardware:
    """Turn the config's `device` and `precision` into a concrete choice, or explain why not."""
    dev = _resolve_device(device, where)
    prec, why = _resolve_precision(dev, precision, training, where)
    eval_prec = _resolve_precision(dev, precision, False, where)[0] if training else prec
    if dev.type == "cpu":
        _keep_freed_memory()
    return Hardware(dev, prec, why, eval_prec)


def _resolve_device(device: str, where: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "CUDA is not available on this machine",
                where=where,
                key="device",
                hint="use device: auto or cpu",
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)",
                where=where,
                key="device",
                hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}",
            )
        return dev if dev.index is not None else torch.device("cuda", 0)
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(
            "MPS is not available on this machine", where=where, key="device", hint="use device: auto or cpu"
        )
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 matmuls natively (AVX512-BF16 or AMX): ~4x fp32 speed here."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _resolve_precision(dev: torch.device, precision: str, training: bool, where: str) -> tuple[str, str]:
    if precision != "auto":
        if precision == "fp16" and dev.type == "cpu":
            raise ConfigError(
                "fp16 autocast is not supported on the CPU",
                where=where,
                key="precision",
                hint="use bf16 or fp32 on CPU",
            )
        if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                "this GPU does not support bf16",
                where=where,
                key="precision",
                hint="use fp16 or fp32 on this GPU",
            )
        return precision, "set in the config"
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: GPU supports bf16"
        return "fp16", "auto: GPU lacks bf16, fp16 with loss scaling"
    if dev.type == "cpu":
        if not training:
            return "fp32", "auto: fp32 for CPU inference, so probabilities match plain transformers"
        if cpu_has_native_bf16():
            return "bf16", "auto: CPU has native bf16 (AVX512-BF16/AMX)"
        return "fp32", "auto: CPU lacks native bf16"
    return "fp32", f"auto: fp32 on {dev.type}"


_MEMORY_TUNED = False


def _keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS after every training step.

    Each step frees and re-allocates tens of MB (e.g. the dense embedding gradient); glibc
    serves blocks above its mmap threshold with fresh pages, so every step pays page faults
    to zero them again (~15% of a MiniLM step here). Raising the thresholds keeps those
    pages in the process, as jemalloc/tcmalloc would. No effect off glibc.
    """
    global _MEMORY_TUNED
    if _MEMORY_TUNED or not sys.platform.startswith("linux"):
        return
    _MEMORY_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 31)
    except (OSError, AttributeError):
        pass


def for_process(hw: Hardware, world: World, where: str) -> Hardware:
    """The device of this process in a distributed run: its own GPU (LOCAL_RANK), or the CPU."""
    if world.size == 1:
        return hw
    if hw.device.type == "cuda" and hw.device.index != world.device.index:
        raise ConfigError(
            f"device {hw.device} would put every process on one GPU",
            where=where,
            key="device",
            hint="use device: auto or cuda; under torchrun each process takes the GPU of its LOCAL_RANK",
        )
    if hw.device.type != world.device.type:
        raise ConfigError(
            f"device {hw.device.type} cannot train with the {world.device.type} process group",
            where=where,
            key="device",
            hint="use device: auto",
        )
    return dataclasses.replace(hw, world=world)


# Dense bf16/fp16 tensor-core peaks (FLOP/s) from the vendors' datasheets, by device-name fragment.
_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe part is lower (756e12), named "H100 PCIe"
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
}


def peak_flops(hw: Hardware) -> float | None:
    """One device's stated half-precision peak, for MFU (None: unknown, or not a GPU)."""
    if hw.device.type != "cuda" or hw.precision == "fp32":
        return None
    name = torch.cuda.get_device_name(hw.device)
    matches = [k for k in _PEAK_FLOPS if k in name]
    return _PEAK_FLOPS[max(matches, key=len)] if matches else None


def attn_implementation(choice: str, device: torch.device, max_length: int) -> str:
    """`auto`: eager attention on CPU for short sequences, where it trains ~1.4x faster than SDPA."""
    if choice != "auto":
        return choice
    return "eager" if device.type == "cpu" and max_length <= 256 else "sdpa"
