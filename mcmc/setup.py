"""From a validated card to live objects: device, dtype, seeds, theory, kernel and starting fields."""

from __future__ import annotations

import numpy as np
import torch

from lattice.theories import theory_from_params
from mcmc.card import Card, CardError

TRAIN_SPAWN_KEY = 0x7472_6169  # distinct from every replica index


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' → ``cuda:<local_rank % n_gpus>`` when CUDA is available, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise CardError("card: device: cuda was requested but no CUDA device is available here; "
                        "use device: cpu or auto")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_dtype(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[name]


def seed_sequence(seed: int, replica: int, n_replicas: int) -> np.random.SeedSequence:
    """Replica r of a run seeded s uses ``SeedSequence(s).spawn(R)[r]`` (DESIGN.md)."""
    return np.random.SeedSequence(seed).spawn(n_replicas)[replica]


def torch_generator(ss: np.random.SeedSequence, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from a SeedSequence (63 bits of its state)."""
    seed = int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return torch.Generator(device=device).manual_seed(seed)


def train_seed_sequence(seed: int) -> np.random.SeedSequence:
    """The SeedSequence of flow training, shared by all ranks."""
    return np.random.SeedSequence(seed, spawn_key=(TRAIN_SPAWN_KEY,))


def build_theory(card: Card) -> object:
    """The theory object described by ``card.theory``."""
    return theory_from_params(card.theory.model_dump())


def initial_field(
    theory: object, n_chains: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A random start ``(B, *field_shape)``: the theory's own ``random_field`` or N(0, 1) per component."""
    if hasattr(theory, "random_field"):
        return theory.random_field(n_chains, generator, dtype=dtype, device=device)
    shape = (n_chains, *theory.field_shape)
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)
