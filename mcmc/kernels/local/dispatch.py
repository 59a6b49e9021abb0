"""Which local-update kernel serves which theory (``sampler.kind: local``)."""

from __future__ import annotations

from typing import Any

from mcmc.kernels.local.common import LocalKernelError


def local_kernel(card: Any, theory: Any) -> Any:
    """The local-update kernel for ``theory`` (dispatch on ``theory.name``), set up by ``card.local``."""
    if card.device == "cuda":
        raise LocalKernelError("sampler.kind local runs on the CPU only (numba); set device: cpu in the card")
    settings = card.local
    name = getattr(theory, "name", None)
    if name == "phi4":
        from mcmc.kernels.local.phi4 import LocalPhi4, WolffPhi4

        if settings.cluster == "wolff":
            return WolffPhi4(theory, n_hits=settings.n_hits, step_size=settings.step_size,
                             n_clusters=settings.n_clusters)
        return LocalPhi4(theory, n_hits=settings.n_hits, step_size=settings.step_size)
    if settings.cluster is not None:
        raise LocalKernelError(f"local.cluster: {settings.cluster} is for phi4 only, not {name!r}")
    if name == "u1":
        from mcmc.kernels.local.u1 import LocalU1

        return LocalU1(theory, n_overrelax=settings.n_overrelax)
    if name == "sun":
        from mcmc.kernels.local.sun import LocalSUN

        return LocalSUN(theory, n_overrelax=settings.n_overrelax)
    raise LocalKernelError(f"no local-update kernel for theory {name!r}; accepted: phi4, u1, sun")
