"""From a validated card to live objects: the device and dtype it names, and its theory (looked up in
the theory registry, ``lattice.theories``)."""

from __future__ import annotations

import torch

from lattice.theories import Theory, theory_from_params
from mcmc.card import Card, CardError


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


def build_theory(card: Card) -> Theory:
    """The theory object described by ``card.theory``."""
    return theory_from_params(card.theory.model_dump())
