"""Device and precision: what `auto` means on this machine, and the autocast context for it."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from dataclasses import dataclass

import torch

from ptft_cli.errors import ConfigError


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16: what autocast runs the forward pass in
    why: str  # one line on why `auto` chose this, for the run header
    # What `evaluate` and `predict` run in. Evaluation during training uses it too, so every
    # validation figure of a run (the best one included) is the one `ptft evaluate` reproduces.
    eval_precision: str = "fp32"

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


def attn_implementation(choice: str, device: torch.device, max_length: int) -> str:
    """`auto`: eager attention on CPU for short sequences, where it trains ~1.4x faster than SDPA."""
    if choice != "auto":
        return choice
    return "eager" if device.type == "cpu" and max_length <= 256 else "sdpa"
