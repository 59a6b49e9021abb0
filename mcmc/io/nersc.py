"""NERSC gauge-configuration files for 4D SU(3): export, import and checks.

Layout. An ASCII header, ``BEGIN_HEADER`` … ``END_HEADER`` with one ``KEY = value`` per line, then
the binary links. Sites run with x fastest and t slowest; at each site come the four directions
μ = x, y, z, t, and for each link the matrix rows, each as 3 complex numbers (re, im):

    DATATYPE = 4D_SU3_GAUGE_3x3    all three rows
    DATATYPE = 4D_SU3_GAUGE        the first two rows; the third is (row0 × row1)* (SU(3))

so the data form an array ``[t][z][y][x][μ][row][col][re|im]``. ``FLOATING_POINT`` is IEEE64BIG or
IEEE32BIG (written); the LITTLE variants are read as well.

Checks. ``CHECKSUM`` (hex) is the sum, modulo 2³², of the data's 32-bit words as stored (each double
gives its two halves). ``PLAQUETTE`` is the average of Re tr U_P / 3 over all 6V plaquettes (the
definition of ``lattice.wilson``) and ``LINK_TRACE`` the average of Re tr U / 3 over all 4V links.
An import recomputes all three and refuses a file that disagrees.

Axes. latflow links are ``(D=4, L0, L1, L2, L3, 3, 3)`` per configuration; lattice direction k is
NERSC dimension k+1, so the array is ``(4, Lx, Ly, Lz, Lt, 3, 3)`` with ``U[μ, x, y, z, t, row, col]``.
(latflow's ``polyakov`` observable runs along direction 0, i.e. NERSC's x.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lattice.wilson import plaquette_retrace

DATATYPES = {"3x3": "4D_SU3_GAUGE_3x3", "3x2": "4D_SU3_GAUGE"}
FLOATS = {"IEEE64BIG": ">f8", "IEEE32BIG": ">f4", "IEEE64LITTLE": "<f8", "IEEE32LITTLE": "<f4"}
_PRECISIONS = {"double": "IEEE64BIG", "single": "IEEE32BIG"}


class NerscError(ValueError):
    """A NERSC file that cannot be written or read, or fails a check; one-line message."""


@dataclass(frozen=True)
class NerscConfig:
    """An imported configuration: links ``(4, Lx, Ly, Lz, Lt, 3, 3)`` complex128 and the header."""

    links: np.ndarray
    header: dict[str, str]


def _check_links(links: np.ndarray) -> np.ndarray:
    links = np.asarray(links)
    if links.ndim != 7 or links.shape[0] != 4 or links.shape[-2:] != (3, 3):
        raise NerscError(f"NERSC export needs 4D SU(3) links (4, Lx, Ly, Lz, Lt, 3, 3), got {links.shape}")
    return links.astype(np.complex128)


def plaquette(links: np.ndarray) -> float:
    """Average Re tr U_P / 3 over all plaquettes of links ``(4, Lx, Ly, Lz, Lt, 3, 3)``."""
    u = torch.from_numpy(np.ascontiguousarray(links, dtype=np.complex128))[None]
    return float(plaquette_retrace(u).mean()) / 3.0


def link_trace(links: np.ndarray) -> float:
    """Average Re tr U / 3 over all links."""
    return float(np.einsum("...ii->...", links).real.mean()) / 3.0


def checksum(data: bytes, byteorder: str = ">") -> int:
    """Sum of the 32-bit words of ``data`` (read in ``byteorder``), modulo 2³²."""
    if len(data) % 4:
        raise NerscError(f"binary data of {len(data)} bytes is not a whole number of 32-bit words")
    return int(np.frombuffer(data, dtype=f"{byteorder}u4").sum(dtype=np.uint64) & np.uint64(0xFFFFFFFF))


def third_row(rows: np.ndarray) -> np.ndarray:
    """The third row of SU(3) matrices from their first two, ``(..., 2, 3) -> (..., 3)``: (r0 × r1)*."""
    return np.conj(np.cross(rows[..., 0, :], rows[..., 1, :]))


def _to_file_order(links: np.ndarray, storage: str) -> np.ndarray:
    """``(4, X, Y, Z, T, 3, 3)`` complex → ``(T, Z, Y, X, 4, rows, 3, 2)`` real."""
    rows = 3 if storage == "3x3" else 2
    site_major = np.transpose(links, (4, 3, 2, 1, 0, 5, 6))[..., :rows, :]
    return np.stack([site_major.real, site_major.imag], axis=-1)


def _from_file_order(data: np.ndarray) -> np.ndarray:
    """``(T, Z, Y, X, 4, rows, 3, 2)`` real → ``(4, X, Y, Z, T, 3, 3)`` complex128."""
    matrices = data[..., 0].astype(np.float64) + 1j * data[..., 1].astype(np.float64)
    if matrices.shape[-2] == 2:
        matrices = np.concatenate([matrices, third_row(matrices)[..., None, :]], axis=-2)
    return np.ascontiguousarray(np.transpose(matrices, (4, 3, 2, 1, 0, 5, 6)))


def _format_header(fields: dict[str, str]) -> bytes:
    lines = ["BEGIN_HEADER", *(f"{k} = {v}" for k, v in fields.items()), "END_HEADER"]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_nersc(
    path: str | Path,
    links: Any,
    *,
    storage: str = "3x3",
    precision: str = "double",
    ensemble_id: str = "latflow",
    ensemble_label: str = "",
    sequence_number: int = 0,
) -> dict[str, str]:
    """Write SU(3) links ``(4, Lx, Ly, Lz, Lt, 3, 3)`` as a NERSC file; returns the header fields."""
    if storage not in DATATYPES or precision not in _PRECISIONS:
        raise NerscError(f"storage {storage!r} / precision {precision!r}: expected 3x3|3x2 and double|single")
    if isinstance(links, torch.Tensor):
        links = links.detach().cpu().numpy()
    links = _check_links(links)
    fp = _PRECISIONS[precision]
    stored = np.ascontiguousarray(_to_file_order(links, storage), dtype=FLOATS[fp])
    data = stored.tobytes()
    links = _from_file_order(stored)  # what a reader gets back: the header describes these links
    fields = {"HDR_VERSION": "1.0", "DATATYPE": DATATYPES[storage], "STORAGE_FORMAT": "1.0"}
    fields |= {f"DIMENSION_{k + 1}": str(n) for k, n in enumerate(links.shape[1:5])}
    fields |= {f"BOUNDARY_{k + 1}": "PERIODIC" for k in range(4)}
    fields |= {
        "LINK_TRACE": repr(link_trace(links)),
        "PLAQUETTE": repr(plaquette(links)),
        "CHECKSUM": f"{checksum(data):08x}",
        "ENSEMBLE_ID": ensemble_id,
        "ENSEMBLE_LABEL": ensemble_label or ensemble_id,
        "SEQUENCE_NUMBER": str(sequence_number),
        "CREATOR": "latflow",
        "CREATION_DATE": datetime.now(timezone.utc).strftime("%a %b %d %H:%M:%S %Y UTC"),
        "FLOATING_POINT": fp,
    }
    Path(path).write_bytes(_format_header(fields) + data)
    return fields


def _split_header(path: Path) -> tuple[dict[str, str], bytes]:
    if not path.is_file():
        raise NerscError(f"no such NERSC file: {path}")
    raw = path.read_bytes()
    end = raw.find(b"END_HEADER")
    if not raw.startswith(b"BEGIN_HEADER") or end < 0:
        raise NerscError(f"{path}: not a NERSC file (no BEGIN_HEADER … END_HEADER)")
    body = raw[raw.index(b"\n", end) + 1 :] if b"\n" in raw[end:] else b""
    fields = {}
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        match = re.match(r"\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$", line)
        if match:
            fields[match.group(1)] = match.group(2)
    return fields, body


def _field(fields: dict[str, str], key: str, path: Path) -> str:
    if key not in fields:
        raise NerscError(f"{path}: header has no {key}")
    return fields[key]


def _tolerance(text: str, single: bool) -> float:
    """What a header value printed as ``text`` can differ by: its last printed digit, plus precision."""
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.lower().split("e")[1]) if "e" in text.lower() else 0
    return 10.0 ** (exponent - decimals) + (1e-6 if single else 1e-12)


def _check_value(name: str, stated: str, computed: float, single: bool, path: Path) -> None:
    if abs(float(stated) - computed) > _tolerance(stated, single):
        raise NerscError(f"{path}: {name} in the header is {stated}, the data give {computed:.15g}")


def read_nersc(path: str | Path, *, check: bool = True) -> NerscConfig:
    """Read a NERSC 4D SU(3) file; with ``check``, verify its checksum, plaquette and link trace."""
    path = Path(path)
    fields, body = _split_header(path)
    datatype, fp = _field(fields, "DATATYPE", path), _field(fields, "FLOATING_POINT", path)
    if datatype not in DATATYPES.values() or fp not in FLOATS:
        raise NerscError(f"{path}: DATATYPE {datatype} / FLOATING_POINT {fp} is not supported")
    dims = [int(_field(fields, f"DIMENSION_{k}", path)) for k in range(1, 5)]
    rows = 3 if datatype.endswith("3x3") else 2
    shape = (*dims[::-1], 4, rows, 3, 2)
    expected = int(np.prod(shape)) * np.dtype(FLOATS[fp]).itemsize
    if len(body) != expected:
        raise NerscError(f"{path}: holds {len(body)} data bytes, {datatype} {dims} needs {expected}")
    if check:
        stated, computed = int(_field(fields, "CHECKSUM", path), 16), checksum(body, FLOATS[fp][0])
        if stated != computed:
            raise NerscError(f"{path}: CHECKSUM in the header is {stated:08x}, the data give {computed:08x}")
    links = _from_file_order(np.frombuffer(body, dtype=FLOATS[fp]).reshape(shape))
    if check:
        single = fp.startswith("IEEE32")
        _check_value("PLAQUETTE", _field(fields, "PLAQUETTE", path), plaquette(links), single, path)
        if "LINK_TRACE" in fields:
            _check_value("LINK_TRACE", fields["LINK_TRACE"], link_trace(links), single, path)
    return NerscConfig(links, fields)


def export_from_ensemble(
    ensemble: str | Path,
    out: str | Path,
    *,
    index: int = -1,
    chain: int = 0,
    storage: str = "3x3",
    precision: str = "double",
) -> dict[str, str]:
    """Write configuration ``index`` (negative: from the end), chain ``chain``, of a 4D SU(3) replica
    file as a NERSC file; the ensemble id and the update number go into the header."""
    from mcmc.io.single import stored_config

    links, traj, ensemble_id = stored_config(ensemble, index, chain)
    return write_nersc(
        out, links, storage=storage, precision=precision, ensemble_id=ensemble_id, sequence_number=traj
    )
