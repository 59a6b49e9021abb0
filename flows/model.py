"""The flow model: a normal prior pushed through a stack of coupling layers, and its builder.

    x = f_n ∘ … ∘ f_1(z),  z ~ r = N(0, 1)^V,   log q(x) = log r(z) − Σ_i log|det ∂f_i|.

Training runs in float32; the Metropolis step needs a log q that is exactly the density of the
proposed x, so MCMC samples from a float64 copy (:meth:`Flow.as_float64`) that draws z and evaluates
every layer in float64: x and log q(x) then come from one and the same map.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flows.config import MappingConfig, check_choice, check_conditioner
from flows.couplings import FourierScaling, coupling_stack
from flows.nets import conditioners_to, reset_parameters
from flows.priors import NormalPrior
from lattice.theories import Theory


@dataclass(frozen=True)
class FlowConfig(MappingConfig):
    """Architecture of a scalar-field flow (the defaults are the tuned φ⁴ L = 8 choice).

    coupling: ``"affine"`` or ``"spline"`` (rational-quadratic); n_layers: number of checkerboard
    couplings; hidden: CNN hidden channels; kernel_size: odd CNN kernel; activation: one of
    ``flows.nets.ACTIVATIONS``; bins, bound: spline bins on [−bound, bound] (ignored for affine);
    fourier: start with a learned translation-invariant Gaussian layer (``FourierScaling``).
    z2: make every coupling equivariant under φ → −φ (``flows.couplings``), so q(−φ) = q(φ) exactly
    and the flow cannot favour one sign of the magnetisation; it doubles the conditioner cost.
    """

    coupling: str = "spline"
    n_layers: int = 4
    hidden: tuple[int, ...] = (8, 8)
    kernel_size: int = 3
    activation: str = "tanh"
    bins: int = 8
    bound: float = 5.0
    fourier: bool = True
    z2: bool = False


    def __post_init__(self) -> None:
        check_conditioner(self)
        check_choice("coupling", self.coupling, ("affine", "spline"))
        if self.bins < 1 or self.bound <= 0:
            raise ValueError(f"flow.bins = {self.bins}, flow.bound = {self.bound}: expected positive values")


class Flow(nn.Module):
    """Normalizing flow on fields of shape ``L``: ``NormalPrior(L)`` and ``layers`` (each with
    ``forward(x) -> (y, logdet (B,))`` and ``inverse(y) -> (x, logdet (B,))``)."""

    def __init__(self, shape: Sequence[int], layers: nn.ModuleList, config: FlowConfig | None = None) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.prior = NormalPrior(self.shape)
        self.layers = layers
        self.config = config
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries dtype and device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def push(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) and log q(x) for prior draws ``z (B, *L)``; differentiable (reparameterised)."""
        logq = self.prior.log_prob(z)
        x = z
        for layer in self.layers:
            x, logdet = layer(x)
            logq = logq - logdet
        return x, logq

    def draw_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` prior draws ``z (n, *L)`` in the flow's dtype and device: the only randomness of a sample,
        so ``sample(n, g)`` equals ``push(draw_prior(n, g))`` and prior draws made in several calls can be
        concatenated and pushed at once."""
        return self.prior.sample(n, generator, self.dtype, self.device)

    def forward_with_logq(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path: ``n`` reparameterised samples ``(n, *L)`` and their log q ``(n,)``, with grad."""
        return self.push(self.draw_prior(n, generator))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``x (n, *L)`` and ``log q(x) (n,)`` in the flow's dtype, without grad."""
        return self.forward_with_logq(n, generator)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) for ``x (B, *L)`` through the inverse: log r(f⁻¹(x)) + Σ log|det ∂f_i⁻¹|; ``(B,)``."""
        logdet_total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in reversed(self.layers):
            x, logdet = layer.inverse(x)
            logdet_total = logdet_total + logdet
        return self.prior.log_prob(x) + logdet_total

    def as_float64(self, conditioner_dtype: torch.dtype = torch.float64) -> Flow:
        """An independent float64 copy in eval mode, without grad: the exact proposal density for MCMC.

        ``conditioner_dtype=torch.float32`` keeps the conditioner networks in float32 while every map,
        log-det and prior density is float64 (``flows.nets.ConvNet.forward``): the proposal is then a
        slightly different bijection, but its log q is still exact to float64 rounding, so the Metropolis
        step stays exact, and sampling costs several times less on CPUs.
        """
        twin = conditioners_to(copy.deepcopy(self).to(torch.float64), conditioner_dtype).eval()
        twin.requires_grad_(False)
        return twin


def build_flow(
    theory: Theory,
    config: FlowConfig | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Flow:
    """A flow for a real scalar theory with ``theory.field_shape = L`` (D = 1..4).

    ``config``: a :class:`FlowConfig` or a plain dict of its keys (missing keys take the defaults).
    Initial weights are drawn from ``generator`` (default: a CPU generator seeded 0), never from
    torch's global RNG; the last conv of every conditioner is zero, so the new flow is the identity.
    """
    config = FlowConfig.of(config)
    shape = tuple(theory.field_shape)
    if not 1 <= len(shape) <= 4:
        raise ValueError(f"scalar flows support lattice dimension D = 1..4, not D = {len(shape)}")
    with torch.random.fork_rng(devices=[]):  # torch.nn's default init must not advance the global RNG
        layers = coupling_stack(
            shape,
            config.n_layers,
            coupling=config.coupling,
            hidden=config.hidden,
            kernel_size=config.kernel_size,
            activation=config.activation,
            bins=config.bins,
            bound=config.bound,
            z2=config.z2,
        )
        if config.fourier:
            layers.insert(0, FourierScaling(shape))
    flow = Flow(shape, layers, config)
    reset_parameters(flow, generator)
    return flow.to(device=device, dtype=dtype)
