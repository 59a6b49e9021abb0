"""Flow training options for GPUs: TF32, bf16 autocast of the conditioners, channels-last, torch.compile.

Card section ``accel`` (all keys optional)::

    accel: {tf32: null, autocast: null, channels_last: null, compile: false}   # compile: false|true|nets|flow

``null`` means automatic: TF32 and channels-last on CUDA, off elsewhere; autocast off; compile off.

* ``tf32``: float32 convolutions and matrix products on the tensor cores in TF32 (10-bit mantissa);
  a process-wide switch of torch (``torch.backends``), set for the duration of training.
* ``autocast: bf16``: the conditioner networks (``flows.nets.ConvNet``) run under
  ``torch.autocast(dtype=bfloat16)``; their outputs are cast back to the field dtype, so every map,
  log-det, prior density and action (the log-density log q) stays in float32. Only the parameters of
  the couplings are computed in bf16: the flow remains an exact bijection with an exact density.
* ``channels_last``: 2-D convolution weights in NHWC memory order (cuDNN's fast layout on tensor cores).
* ``compile``: ``false`` (or ``off``); ``true`` or ``nets``: every ``ConvNet`` compiled with
  ``torch.compile``; ``flow``: every layer of the flow (``flow.layers``: conditioner, elementwise map and
  log-det together) compiled, so that the compiler fuses the many small elementwise kernels of the
  rational-quadratic spline with the gathers around them. Both only where :func:`compile_available`
  (else eager, with the reason logged). The compiled and the eager layer compute the same function;
  their outputs differ by floating-point rounding only (fused kernels round differently).

:func:`training_accel` applies the options for training and removes them afterwards, so the trained
flow that samples (``flows.proposal.proposal_flow``, which compiles its own copy with ``compile: flow``)
is the plain one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flows.nets import ConvNet

AUTOCAST = {"off": None, "bf16": torch.bfloat16}
COMPILE_MODES = ("off", "nets", "flow")
PROPOSAL_DTYPES = ("float64", "float32")
LOG = logging.getLogger(__name__)


def compile_mode(value: bool | str | None) -> str:
    """The card's ``accel.compile`` as one of ``COMPILE_MODES``: false/None → off, true → nets."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "nets"
    if value not in COMPILE_MODES:
        raise ValueError(f"accel.compile = {value!r}: expected true, false or one of {list(COMPILE_MODES)}")
    return str(value)


def check_proposal_dtype(value: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``PROPOSAL_DTYPES``."""
    if value not in PROPOSAL_DTYPES:
        raise ValueError(f"accel.proposal_dtype = {value!r}: expected one of {list(PROPOSAL_DTYPES)}")


def compile_available(device: torch.device) -> str | None:
    """None when ``torch.compile`` can generate code for ``device``, else a one-line reason."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs triton, which is not installed"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("cc", "gcc", "clang", "g++")):
        return "torch.compile on the CPU needs a C/C++ compiler (cc, gcc or clang) on PATH"
    if device.type not in ("cpu", "cuda"):
        return f"no torch.compile fast path for device type {device.type!r}"
    return None


@dataclass(frozen=True)
class AccelConfig:
    """Training options (module docstring); ``None`` means automatic for the device."""

    tf32: bool | None = None
    autocast: str | None = None
    channels_last: bool | None = None
    compile: bool | str = False
    proposal_dtype: str | None = None  # sampling, not training: flows.proposal.proposal_flow

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise ValueError(f"autocast = {self.autocast!r}: expected one of {sorted(AUTOCAST)}")
        compile_mode(self.compile)  # raises on an unknown mode
        if self.proposal_dtype is not None:
            check_proposal_dtype(self.proposal_dtype)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> AccelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names and v is not None})

    def resolved(self, device: torch.device) -> AccelConfig:
        """The automatic choices made for ``device``: TF32 and channels-last on CUDA only."""
        cuda = device.type == "cuda"
        return AccelConfig(
            tf32=cuda if self.tf32 is None else self.tf32,
            autocast=self.autocast or "off",
            channels_last=cuda if self.channels_last is None else self.channels_last,
            compile=compile_mode(self.compile),
            proposal_dtype=self.proposal_dtype,
        )


def _set_tf32(on: bool) -> tuple[bool, bool]:
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return old


def _conv_format(module: nn.Module, fmt: torch.memory_format) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)  # (C_out, C_in, k, k) only


def _nets(module: nn.Module) -> list[ConvNet]:
    return [m for m in module.modules() if isinstance(m, ConvNet)]


def compile_targets(flow: nn.Module, mode: str) -> list[nn.Module]:
    """The modules that ``mode`` compiles: the ``ConvNet``s (``nets``), the flow's layers that hold a
    conditioner (``flow``; layers without one, such as the FFT layer ``FourierScaling``, stay eager, and a
    module without ``layers`` is compiled whole), or none (``off``)."""
    mode = compile_mode(mode)
    if mode == "nets":
        return list(_nets(flow))
    if mode == "flow":
        layers = getattr(flow, "layers", None)
        return [layer for layer in layers if _nets(layer)] if layers is not None else [flow]
    return []


def compile_flow(flow: nn.Module, mode: str, device: torch.device) -> list[nn.Module]:
    """Compile the :func:`compile_targets` of ``flow`` in place (``nn.Module.compile``) where
    :func:`compile_available` for ``device``, else log why not; returns the modules compiled, which
    :func:`uncompile` turns back to eager."""
    targets = compile_targets(flow, mode)
    reason = compile_available(device) if targets else None
    if reason is not None:
        LOG.warning("accel.compile = %s ignored: %s", mode, reason)
        return []
    for module in targets:
        module.compile(dynamic=None)
    return targets


def uncompile(modules: list[nn.Module]) -> None:
    """Back to the eager forward of modules compiled by :func:`compile_flow`."""
    for module in modules:
        module._compiled_call_impl = None  # nn.Module.compile's hook


@contextlib.contextmanager
def training_accel(
    flow: nn.Module, config: AccelConfig | None, device: torch.device
) -> Iterator[AccelConfig]:
    """Apply ``config`` (resolved for ``device``) to ``flow`` inside the block; undo it on exit.

    The parameters keep their identity (an optimizer built inside the block stays valid) and their
    values; only their memory order, the conditioners' autocast dtype and compiled forward change.
    """
    config = (config or AccelConfig()).resolved(device)
    old_tf32 = _set_tf32(bool(config.tf32)) if device.type == "cuda" else None
    if config.channels_last:
        _conv_format(flow, torch.channels_last)
    nets = _nets(flow)
    for net in nets:
        net.autocast_dtype = AUTOCAST[config.autocast]
    compiled = compile_flow(flow, str(config.compile), device)
    try:
        yield config
    finally:
        for net in nets:
            net.autocast_dtype = None
        uncompile(compiled)
        if config.channels_last:
            _conv_format(flow, torch.contiguous_format)
        if old_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
