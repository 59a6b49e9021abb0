"""Export measurements to pyerrors (https://github.com/fjosw/pyerrors) in its own json.gz format.

Every reported quantity becomes a ``pyerrors.Obs``: a directly measured series is an Obs with one
replica per chain and replica file, named ``<ensemble>|r<rank>c<chain>`` (pyerrors reads the part before
``|`` as the ensemble, the rest as the replica), so pyerrors' Gamma method sees the true Monte Carlo
histories; a derived quantity F = f(⟨a_1⟩, …) is built with ``pyerrors.derived_observable`` from the Obs
of its inputs, so that pyerrors propagates the errors itself (linearly, as latflow does). The file is
written with ``pyerrors.input.json.dump_dict_to_json`` and read back with
``pyerrors.input.json.load_json_dict``.

pyerrors is optional (``pip install pyerrors`` or ``latflow[analysis]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Derived = tuple[str, Sequence[str], Callable[[np.ndarray], float]]


def _pyerrors() -> Any:
    try:
        import pyerrors
    except ImportError:
        raise ImportError("--pyerrors needs the pyerrors package: pip install pyerrors") from None
    return pyerrors


def series_obs(replicas: Sequence[np.ndarray], names: Sequence[str]) -> Any:
    """A pyerrors Obs of one series: ``replicas[i]`` ``(N_i,)`` under replica name ``names[i]``."""
    pe = _pyerrors()
    return pe.Obs([np.asarray(r, dtype=np.float64) for r in replicas], list(names))


def derived_obs(f: Callable[[np.ndarray], float], inputs: Sequence[Any]) -> Any:
    """``f`` of the Obs ``inputs``' values, with pyerrors' linear error propagation (numerical gradient)."""
    pe = _pyerrors()
    return pe.derived_observable(
        lambda x, **kw: np.float64(f(np.asarray(x, dtype=np.float64))), list(inputs), num_grad=True
    )


def to_pyerrors(direct: Mapping[str, Sequence[np.ndarray]], primaries: Mapping[str, Sequence[np.ndarray]],
                derived: Sequence[Derived], replica_names: Sequence[str]) -> dict[str, Any]:
    """``{name: Obs}`` for every directly reported series and every derived quantity whose inputs exist.
    ``primaries``: every stored series (derived inputs), replicas in the order of ``replica_names``."""
    pool = {**primaries, **direct}
    cache: dict[str, Any] = {}

    def obs(name: str) -> Any:
        if name not in cache:
            cache[name] = series_obs(pool[name], replica_names)
        return cache[name]

    out = {name: obs(name) for name in direct}
    for name, inputs, f in derived:
        if all(i in pool for i in inputs):
            value = derived_obs(f, [obs(i) for i in inputs])
            if np.isfinite(value.value):
                out[name] = value
    return out


def dump(observables: Mapping[str, Any], path: str | Path, description: str = "") -> Path:
    """Write ``{name: Obs}`` to ``path`` (``.json.gz``) in pyerrors' json format."""
    pe = _pyerrors()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = str(path)[: -len(".json.gz")] if str(path).endswith(".json.gz") else str(path)
    pe.input.json.dump_dict_to_json(dict(observables), stem, description=description, gz=True)
    return Path(stem + ".json.gz")
