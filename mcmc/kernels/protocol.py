"""The kernel protocol shared by every sampler, its records, and the Metropolis accept step.

A kernel advances B independent chains at once (cf. BlackJAX):

    state = kernel.init(x)                       # x: (B, *field_shape)
    state, info = kernel.step(state, generator)  # one update of every chain

States and infos are frozen records. Each state caches ``logp = −S(x)`` (float64, shape ``(B,)``)
so that a rejection recomputes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import torch


@dataclass(frozen=True)
class ChainState:
    """State of B chains: the fields ``x`` of shape ``(B, *field_shape)`` and ``logp = −S(x)``, ``(B,)``."""

    x: torch.Tensor
    logp: torch.Tensor


@dataclass(frozen=True)
class StepInfo:
    """What one update did, per chain, each of shape ``(B,)``.

    ``accepted``: whether the chain moved to the proposal; ``accept_prob``: min(1, e^{log ratio});
    ``dH``: HMC energy violation H(new) − H(old) (NaN for kernels without one);
    ``logq``: flow density of the chain's current configuration (NaN for kernels without one);
    ``proposal_logw``: log p̃ − log q of the proposal, for reweighting (NaN without a proposal density);
    ``proposal_obs``: the observables of that proposal, ``{name: (B,)}`` (None for kernels without
    independent proposals), for the all-proposal reweighted estimate.
    """

    accepted: torch.Tensor
    accept_prob: torch.Tensor
    dH: torch.Tensor
    logq: torch.Tensor
    proposal_logw: torch.Tensor
    proposal_obs: Mapping[str, torch.Tensor] | None = None


S = TypeVar("S", bound=ChainState)


@runtime_checkable
class Kernel(Protocol[S]):
    """A Markov kernel on batched lattice fields."""

    def init(self, x: torch.Tensor) -> S:
        """Build the state of B chains started at ``x`` of shape ``(B, *field_shape)``."""
        ...

    def step(self, state: S, generator: torch.Generator) -> tuple[S, StepInfo]:
        """Advance every chain by one update, drawing all randomness from ``generator``."""
        ...


def nan_like(t: torch.Tensor) -> torch.Tensor:
    """A float64 tensor of NaN with the shape and device of ``t``."""
    return torch.full(t.shape, float("nan"), dtype=torch.float64, device=t.device)


def metropolis_accept(
    log_ratio: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Metropolis–Hastings test for B chains: accept with probability min(1, e^{log_ratio}).

    ``log_ratio`` has shape ``(B,)``; returns ``(accepted (B,) bool, accept_prob (B,) float64)``.
    A NaN ratio is always rejected. Exactly B uniforms are drawn from ``generator``.
    """
    log_ratio = log_ratio.to(torch.float64)
    u = torch.rand(log_ratio.shape, generator=generator, dtype=torch.float64, device=log_ratio.device)
    accepted = torch.log(u) < log_ratio  # False for NaN
    accept_prob = torch.exp(torch.clamp(torch.nan_to_num(log_ratio, nan=-torch.inf), max=0.0))
    return accepted, accept_prob


def select(accepted: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-chain choice: ``new[b]`` where ``accepted[b]``, else ``old[b]``; any trailing shape."""
    mask = accepted.reshape(accepted.shape + (1,) * (new.dim() - accepted.dim()))
    return torch.where(mask, new, old)
