"""Gradient estimators of the reverse KL divergence KL(q_θ ‖ p), p ∝ e^{−S}, for a flow x = f_θ(z), z ~ r.

With s(x) = log q_θ(x) + S(x) (so that E_q[s] = KL − log Z), each estimator back-propagates a surrogate
whose gradient is, in expectation, ∇_θ KL:

* ``reparam`` (Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515): ∇_θ (1/N) Σ_i s(f_θ(z_i)), the total
  derivative, which includes the score term ∇_θ log q_θ(x)|_x (zero in expectation, not per sample).
* ``path`` (Vaitl, Nicoli, Nakajima, Kessel, "Gradients should stay on path", 2022): the same derivative
  without the score term, (1/N) Σ_i [∇_x s(x)]_{x = x_i} · ∂x_i/∂θ. ∇_x log q_θ(x) is taken through the
  inverse (``flow.log_prob``) at the detached sample, so the estimator is zero sample by sample where
  q = p, and its variance vanishes at the optimum.
* ``reinforce`` (score function with a baseline; Białas, Korcyl, Stebel, 2023):
  N/(N−1) · (1/N) Σ_i (s_i − s̄) ∇_θ log q_θ(x_i) with x_i drawn without grad and s̄ the batch mean; the
  factor N/(N−1) removes the bias of a baseline that contains the sample itself. It never
  differentiates the action, so S need not be differentiable or cheap to differentiate.

Each function draws ``n`` samples from ``generator``, back-propagates the sum of its per-sample surrogate
divided by ``n_total`` (the batch over all ranks of a data-parallel step, ``n`` when alone), and returns
log w = −S − log q ``(n,)`` (detached). ``gather`` turns a rank's ``(n,)`` tensor into the concatenation
over all ranks ``(n_total,)`` (identity when alone): the REINFORCE baseline is the total-batch mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

ESTIMATORS = ("reparam", "path", "reinforce")

Gather = Callable[[torch.Tensor], torch.Tensor]


def _alone(t: torch.Tensor) -> torch.Tensor:
    return t


def reparam_backward(flow: Any, theory: Any, n: int, n_total: int, generator: torch.Generator,
                     gather: Gather = _alone) -> torch.Tensor:
    """Reparameterised total derivative of (1/n_total) Σ_i s(f_θ(z_i)); returns log w ``(n,)``."""
    x, logq = flow.forward_with_logq(n, generator)
    action = theory.action(x)
    s = logq + action
    (s.sum() / n_total).backward()
    return -s.detach()


def path_backward(flow: Any, theory: Any, n: int, n_total: int, generator: torch.Generator,
                  gather: Gather = _alone) -> torch.Tensor:
    """Path gradient (1/n_total) Σ_i ∇_x s(x_i) · ∂x_i/∂θ, with ∇_x log q through ``flow.log_prob``."""
    x, logq = flow.forward_with_logq(n, generator)
    with torch.no_grad():
        logw = -(logq + theory.action(x))
    x_fixed = x.detach().requires_grad_(True)
    s_fixed = flow.log_prob(x_fixed) + theory.action(x_fixed)
    (grad_x,) = torch.autograd.grad(s_fixed.sum(), x_fixed)
    torch.autograd.backward(x, grad_x / n_total)
    return logw


def reinforce_backward(flow: Any, theory: Any, n: int, n_total: int, generator: torch.Generator,
                       gather: Gather = _alone) -> torch.Tensor:
    """Score-function gradient with the total-batch mean of s as baseline, debiased by N/(N−1)."""
    with torch.no_grad():
        x, logq = flow.sample(n, generator)
        s = logq + theory.action(x)
    s_all = gather(s)
    weight = (s - s_all.mean()) * (n_total / max(n_total - 1, 1))
    logq_theta = flow.log_prob(x)
    ((weight * logq_theta).sum() / n_total).backward()
    return -s


BACKWARDS = {"reparam": reparam_backward, "path": path_backward, "reinforce": reinforce_backward}


def estimator_backward(name: str) -> Callable[..., torch.Tensor]:
    """The backward function of estimator ``name`` (one of ``ESTIMATORS``)."""
    if name not in BACKWARDS:
        raise ValueError(f"train.estimator = {name!r}: expected one of {list(ESTIMATORS)}")
    return BACKWARDS[name]
