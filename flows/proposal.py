"""The flow that proposes for independence Metropolis, in one of two precisions (``accel.proposal_dtype``).

* ``float64`` (the default): ``Flow.as_float64(conditioner_dtype=float32)``, every map, log-det and prior
  density in float64 with float32 conditioners; log q is exact to float64 rounding.
* ``float32``: the trained float32 flow itself, wrapped by :class:`Float32Proposal`, which hands the
  sampler x and log q in float64. The map that makes x is the one whose log q is returned (same
  layers, same conditioner outputs), so log q is the density of the proposed x to float32 rounding:
  the relative error of each term is ~2⁻²⁴, about 10⁻⁴ in log q for the ~10³ terms of an L = 32
  field, against log-weight spreads of order one. Half the memory traffic of the float64 map on GPUs.

With ``accel.compile: flow`` the proposal's layers are compiled too (``flows.accel.compile_flow``); a
compiled map may round differently for different batch sizes, so the ensemble is then reproducible for
one ``sample.proposal_batch`` only, not across proposal chunkings (module docstring of
``mcmc.kernels.independence``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from flows.accel import check_proposal_dtype, compile_flow, compile_mode


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


class Float32Proposal(nn.Module):
    """A float32 flow seen by the sampler as a float64 one: ``draw_prior``, ``push``, ``sample`` and
    ``log_prob`` run the wrapped flow in float32 and return x ``(B, *field_shape)`` in float64 (complex128
    for complex links) and log q ``(B,)`` in float64 (x's float32 values are exact in float64)."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    @property
    def dtype(self) -> torch.dtype:
        return _wide(self.flow.dtype)

    @property
    def device(self) -> torch.device:
        return self.flow.device

    @property
    def layers(self) -> nn.ModuleList:
        return self.flow.layers

    def draw_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` prior draws z in the wrapped flow's dtype (float32)."""
        return self.flow.draw_prior(n, generator)

    def push(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) and log q(x) of the float32 map, both returned as float64."""
        x, logq = self.flow.push(z)
        return x.to(_wide(x.dtype)), logq.to(torch.float64)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.push(self.draw_prior(n, generator))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) ``(B,)`` in float64, through the float32 inverse."""
        return self.flow.log_prob(x.to(self.flow.dtype)).to(torch.float64)


def proposal_flow(flow: nn.Module, dtype: str | None = None, compile: bool | str = False,
                  device: torch.device | None = None) -> nn.Module:
    """An independent eval-mode copy of the trained ``flow`` to propose with, without grad: ``dtype``
    float64 (None: the default) or float32 (module docstring); with ``compile == "flow"`` its layers are
    compiled where ``torch.compile`` is available on ``device`` (default: the flow's)."""
    dtype = dtype or "float64"
    check_proposal_dtype(dtype)
    if dtype == "float64":
        proposal = flow.as_float64(conditioner_dtype=torch.float32)
        layers_of = proposal
    else:
        if flow.dtype != torch.float32:
            raise ValueError(f"accel.proposal_dtype = float32 needs a float32 flow, not {flow.dtype}")
        twin = copy.deepcopy(flow).eval()
        twin.requires_grad_(False)
        proposal, layers_of = Float32Proposal(twin).eval(), twin
    if compile_mode(compile) == "flow":
        compile_flow(layers_of, "flow", device or flow.device)
    return proposal
