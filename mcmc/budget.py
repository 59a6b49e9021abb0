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

import torch

from lattice.theories import theory_from_params
from mcmc.card import Card, CardError

HMC_COPIES = 8
LOCAL_COPIES = 4
FLOW_COPIES = 6
FLOW_ACTIVATIONS = 4
DEFAULT_LAYERS = 16
DEFAULT_TRAIN_BATCH = 64


def config_elements(card: Card) -> int:
    """Real numbers in one configuration (a complex number counts as two)."""
    theory = theory_from_params(card.theory.model_dump())
    complex_factor = 2 if getattr(theory, "manifold", "flat") == "sun" else 1  # SU(N) links are complex
    return math.prod(theory.field_shape) * complex_factor


def estimate_bytes(card: Card) -> int:
    """The run's estimated peak memory in bytes (see the module docstring for the model)."""
    elements = config_elements(card)
    itemsize = 8 if card.dtype == "float64" else 4
    chains = card.sample.n_chains
    kind = card.sampler.kind
    if kind == "hmc":
        return HMC_COPIES * chains * elements * itemsize
    if kind == "local":
        return LOCAL_COPIES * chains * elements * 8
    batch = card.train.batch_size_max or card.train.batch_size or DEFAULT_TRAIN_BATCH
    layers = card.flow.n_layers or DEFAULT_LAYERS
    train = FLOW_ACTIVATIONS * layers * batch * elements * 4
    return max(FLOW_COPIES * chains * elements * 8, train)


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


def check_fits(card: Card, device: torch.device) -> int:
    """Raise ``CardError`` (with the estimate) when the run cannot fit in ``device``'s memory; returns
    the estimate in bytes."""
    need = estimate_bytes(card)
    have = device_memory(torch.device("cpu") if card.sampler.kind == "local" else device)
    if have is not None and need > have:
        shape = "x".join(map(str, card.theory.shape))
        raise CardError(
            f"card: this run needs about {_gb(need)} ({card.sampler.kind}, {card.sample.n_chains} chain(s) "
            f"of {card.theory.name} on {shape}) but {device.type} has {_gb(have)} in all; "
            "use a smaller theory.shape, sample.n_chains or train.batch_size"
        )
    return need
