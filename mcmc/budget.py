"""Will a run fit? An estimate of its largest memory use, checked before anything is allocated or written.

The estimate counts field-sized tensors of the card's lattice (the theory object holds no field, so
even an absurd shape costs nothing to check):

- one configuration: V·D components for gauge theories (V·D·N² complex numbers for SU(N)), V for φ⁴,
  at the card's dtype (float64: 8 bytes; complex: twice that);
- HMC: ``HMC_COPIES`` configurations per chain (fields, momenta, forces, the trial pair, temporaries);
- local updates: ``LOCAL_COPIES`` per chain (float64 on the CPU);
- a flow: ``FLOW_COPIES`` per chain while sampling, and for training a batch of ``train.batch_size_max``
  (else ``train.batch_size``) float32 configurations kept ``FLOW_ACTIVATIONS`` times per layer for the
  backward pass.

The independence kernel's proposal buffer is sized by the kernel itself (``mcmc.kernels.independence``,
issue 20), so it is not counted here. The limit is the device's total memory (the CPU's physical
memory, or the GPU's).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from mcmc.runtime import JobError

HMC_COPIES = 8
LOCAL_COPIES = 4
FLOW_COPIES = 6
FLOW_ACTIVATIONS = 4
DEFAULT_LAYERS = 16
DEFAULT_TRAIN_BATCH = 64


@dataclass(frozen=True)
class MemoryNeed:
    """A run's estimated peak memory in ``bytes``; ``what`` describes the run for the refusal (e.g.
    "hmc, 4 chain(s) of phi4 on 8x8"); ``on_cpu``: it runs on the CPU whatever the device."""

    bytes: int
    what: str
    on_cpu: bool = False


def config_elements(theory: Any) -> int:
    """Real numbers in one configuration of ``theory`` (a complex number counts as two)."""
    complex_factor = 2 if getattr(theory, "manifold", "flat") == "sun" else 1  # SU(N) links are complex
    return math.prod(theory.field_shape) * complex_factor


def hmc_bytes(n_chains: int, elements: int, itemsize: int) -> int:
    """HMC: ``HMC_COPIES`` configurations per chain."""
    return HMC_COPIES * n_chains * elements * itemsize


def local_bytes(n_chains: int, elements: int) -> int:
    """Local updates: ``LOCAL_COPIES`` float64 configurations per chain."""
    return LOCAL_COPIES * n_chains * elements * 8


def flow_bytes(n_chains: int, elements: int, batch: int | None, layers: int | None) -> int:
    """A flow: sampling (``FLOW_COPIES`` float64 configurations per chain) or training (a float32
    ``batch`` kept ``FLOW_ACTIVATIONS`` times per layer), whichever is larger; None: the defaults."""
    train = FLOW_ACTIVATIONS * (layers or DEFAULT_LAYERS) * (batch or DEFAULT_TRAIN_BATCH) * elements * 4
    return max(FLOW_COPIES * n_chains * elements * 8, train)


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes, None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fits(need: MemoryNeed, device: torch.device) -> int:
    """Raise ``JobError`` (with the estimate) when the run cannot fit in ``device``'s memory; returns
    the estimate in bytes."""
    have = device_memory(torch.device("cpu") if need.on_cpu else device)
    if have is not None and need.bytes > have:
        raise JobError(
            f"card: this run needs about {_gb(need.bytes)} ({need.what}) but {device.type} has {_gb(have)} "
            "in all; use a smaller theory.shape, sample.n_chains or train.batch_size"
        )
    return need.bytes
