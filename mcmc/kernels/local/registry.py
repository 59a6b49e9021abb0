"""Which local-update kernel serves which theory: a registry of factories by theory name.

A factory is ``factory(theory, *, n_hits, step_size, n_overrelax, cluster, n_clusters) -> kernel`` (the
card's ``local`` section); each kernel takes the settings it uses. A new theory's local kernel is one
``register_local_kernel`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcmc.kernels.local.common import LocalKernelError
from mcmc.kernels.local.phi4 import LocalPhi4, WolffPhi4
from mcmc.kernels.local.sun import LocalSUN
from mcmc.kernels.local.u1 import LocalU1

LocalFactory = Callable[..., Any]

_FACTORIES: dict[str, LocalFactory] = {}


def register_local_kernel(theory_name: str, factory: LocalFactory) -> None:
    """Serve ``theory_name`` with ``factory`` (replacing any earlier registration)."""
    _FACTORIES[theory_name] = factory


def local_kernel_factory(theory_name: str) -> LocalFactory:
    """The local-kernel factory of ``theory_name``; ``ValueError`` naming the served theories if none."""
    if theory_name not in _FACTORIES:
        accepted = ", ".join(_FACTORIES)
        raise ValueError(f"no local-update kernel for theory {theory_name!r}; accepted: {accepted}")
    return _FACTORIES[theory_name]


def _no_cluster(theory: Any, cluster: str | None) -> None:
    if cluster is not None:
        raise LocalKernelError(f"local.cluster: {cluster} is for phi4 only, not {theory.name!r}")


def _phi4(theory: Any, *, n_hits: int, step_size: float | None, cluster: str | None = None,
          n_clusters: int = 1, **_unused: Any) -> LocalPhi4:
    if cluster == "wolff":
        return WolffPhi4(theory, n_hits=n_hits, step_size=step_size, n_clusters=n_clusters)
    return LocalPhi4(theory, n_hits=n_hits, step_size=step_size)


def _u1(theory: Any, *, n_overrelax: int, cluster: str | None = None, **_unused: Any) -> LocalU1:
    _no_cluster(theory, cluster)
    return LocalU1(theory, n_overrelax=n_overrelax)


def _sun(theory: Any, *, n_overrelax: int, cluster: str | None = None, **_unused: Any) -> LocalSUN:
    _no_cluster(theory, cluster)
    return LocalSUN(theory, n_overrelax=n_overrelax)


register_local_kernel("phi4", _phi4)
register_local_kernel("u1", _u1)
register_local_kernel("sun", _sun)
