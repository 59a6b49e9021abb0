"""The layout of an SU(N) spectral coupling's conditioner outputs (``flows.sun.flow``) as the spline
parameters of ``flows.spectral.spectral_map``: one spline for stick 0, and for each later stick K
splines, one per feature of the stick before it (``flows.spectral.conditional_params``)."""

from __future__ import annotations

import torch

from flows.transforms import spline_n_params


def n_stick_params(n: int, bins: int, k_basis: int) -> int:
    """Conditioner outputs per site: P = ``spline_n_params(bins)`` for stick 0 and K·P for each later
    stick (``flows.spectral.conditional_params``); (N − 1)·P when K = 1, and P for SU(2) (one stick)."""
    return spline_n_params(bins) * (1 + (n - 2) * k_basis)


def stick_params(flat: torch.Tensor, n: int, bins: int, k_basis: int) -> torch.Tensor:
    """Conditioner outputs ``flat (..., n_stick_params)`` as the ``params`` of ``spectral_map``:
    ``(..., N−1, P)`` when K = 1 or N = 2 (one stick, nothing to condition on), else ``(..., N−1, K, P)``
    with stick 0's j > 0 entries zero (unused). Channel order: stick 0's P, then stick k's K·P, basis
    function j before spline parameter p."""
    n_params = spline_n_params(bins)
    if k_basis == 1 or n == 2:
        return flat.unflatten(-1, (n - 1, n_params))
    first = torch.nn.functional.pad(flat[..., None, :n_params], (0, 0, 0, k_basis - 1))   # (..., K, P)
    rest = flat[..., n_params:].unflatten(-1, (n - 2, k_basis, n_params))
    return torch.cat([first.unsqueeze(-3), rest], dim=-3)
