"""ILDG gauge-configuration files (4D SU(3)) in LIME containers: export, import and checksum.

LIME (SciDAC / USQCD "Lattice QCD Interchange Message Encapsulation"). A file is a sequence of records,
each a 144-byte big-endian header followed by its data, zero-padded to a multiple of 8 bytes:

    uint32 magic 0x456789AB | uint16 version 1 | uint16 flags (bit 15: message begin, bit 14: message end)
    uint64 data length (without padding) | 128 bytes record type (ASCII, NUL-padded)

ILDG (International Lattice Data Grid, file format 1.1) records, found by type wherever they are:

- ``ildg-format``: XML ``<ildgFormat>`` with ``version``, ``field`` = su3gauge, ``precision`` (32 or 64)
  and the extents ``lx ly lz lt``;
- ``ildg-binary-data``: the links, big-endian IEEE floats of that precision, sites with x fastest and t
  slowest, at each site the directions μ = x, y, z, t, each a 3 × 3 matrix row by row as (re, im) pairs,
  i.e. ``[t][z][y][x][μ][row][col][re|im]`` (the layout of NERSC's 3x3 format);
- ``ildg-data-lfn``: the logical file name (a string);
- ``scidac-checksum``: XML ``<scidacChecksum>`` with ``suma`` and ``sumb`` (hex). For the site with
  lexicographic index r = x + Lx (y + Ly (z + Lz t)), c_r = CRC-32 (zlib) of the site's bytes, and
  suma = XOR_r rotl32(c_r, r mod 29), sumb = XOR_r rotl32(c_r, r mod 31).

latflow writes message 1 = ``ildg-format`` (MB), ``ildg-binary-data``, ``scidac-checksum`` (ME) and
message 2 = ``ildg-data-lfn`` (MB, ME). Links are ``(4, Lx, Ly, Lz, Lt, 3, 3)`` as in ``mcmc.io.nersc``.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcmc.io.nersc import _check_links, _from_file_order, _to_file_order

MAGIC = 0x456789AB
HEADER = struct.Struct(">IHHQ128s")
MB, ME = 0x8000, 0x4000
_DTYPES = {64: ">f8", 32: ">f4"}
_XMLNS = 'xmlns="http://www.lqcd.org/ildg" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


class IldgError(ValueError):
    """An ILDG/LIME file that cannot be written or read, or fails its checks; one-line message."""


@dataclass(frozen=True)
class IldgConfig:
    """An imported configuration: links ``(4, Lx, Ly, Lz, Lt, 3, 3)`` complex128, the logical file name
    and the record types in file order."""

    links: np.ndarray
    lfn: str
    records: tuple[str, ...]


def lime_record(kind: str, data: bytes, begin: bool, end: bool) -> bytes:
    """One LIME record: header, data and zero padding to a multiple of 8 bytes."""
    flags = (MB if begin else 0) | (ME if end else 0)
    head = HEADER.pack(MAGIC, 1, flags, len(data), kind.encode("ascii"))
    return head + data + bytes(-len(data) % 8)


def read_lime(raw: bytes, where: str = "file") -> list[tuple[str, int, bytes]]:
    """``(type, flags, data)`` of every record of a LIME byte string."""
    out, pos = [], 0
    while pos < len(raw):
        if len(raw) - pos < HEADER.size:
            raise IldgError(f"{where}: truncated LIME record header at byte {pos}")
        magic, _version, flags, length, kind = HEADER.unpack_from(raw, pos)
        if magic != MAGIC:
            raise IldgError(f"{where}: not a LIME file (magic {magic:#010x} at byte {pos})")
        start = pos + HEADER.size
        if start + length > len(raw):
            raise IldgError(f"{where}: record {kind.rstrip(bytes(1)).decode()!r} is truncated")
        out.append((kind.split(b"\0")[0].decode("ascii"), flags, raw[start : start + length]))
        pos = start + length + (-length % 8)
    return out


def scidac_checksum(data: bytes, n_sites: int) -> tuple[int, int]:
    """(suma, sumb) of the SciDAC checksum over ``n_sites`` equal-sized site records (module docstring)."""
    size = len(data) // n_sites
    suma = sumb = 0
    for r in range(n_sites):
        crc = zlib.crc32(data[r * size : (r + 1) * size]) & 0xFFFFFFFF
        for k, mod in ((0, 29), (1, 31)):
            s = r % mod
            rot = ((crc << s) | (crc >> (32 - s))) & 0xFFFFFFFF if s else crc
            if k == 0:
                suma ^= rot
            else:
                sumb ^= rot
    return suma, sumb


def _format_xml(dims: tuple[int, ...], precision: int) -> bytes:
    extents = "".join(f"<l{a}>{n}</l{a}>" for a, n in zip("xyzt", dims, strict=True))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ildgFormat {_XMLNS}><version>1.0</version>'
            f"<field>su3gauge</field><precision>{precision}</precision>{extents}</ildgFormat>").encode()


def _checksum_xml(suma: int, sumb: int) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<scidacChecksum><version>1.0</version>'
            f"<suma>{suma:x}</suma><sumb>{sumb:x}</sumb></scidacChecksum>").encode()


def write_ildg(path: str | Path, links: Any, *, precision: int = 64, lfn: str = "latflow") -> Path:
    """Write SU(3) links ``(4, Lx, Ly, Lz, Lt, 3, 3)`` as an ILDG file (module docstring)."""
    if precision not in _DTYPES:
        raise IldgError(f"precision {precision}: expected 32 or 64")
    if isinstance(links, torch.Tensor):
        links = links.detach().cpu().numpy()
    links = _check_links(links)
    data = np.ascontiguousarray(_to_file_order(links, "3x3"), dtype=_DTYPES[precision]).tobytes()
    dims = tuple(int(n) for n in links.shape[1:5])
    suma, sumb = scidac_checksum(data, int(np.prod(dims)))
    body = (lime_record("ildg-format", _format_xml(dims, precision), True, False)
            + lime_record("ildg-binary-data", data, False, False)
            + lime_record("scidac-checksum", _checksum_xml(suma, sumb), False, True)
            + lime_record("ildg-data-lfn", lfn.encode(), True, True))
    Path(path).write_bytes(body)
    return Path(path)


def _tag(xml: str, name: str, path: Path) -> str:
    match = re.search(rf"<(?:\w+:)?{name}>\s*([^<]*?)\s*</(?:\w+:)?{name}>", xml)
    if match is None:
        raise IldgError(f"{path}: the XML record has no <{name}>")
    return match.group(1)


def read_ildg(path: str | Path, *, check: bool = True) -> IldgConfig:
    """Read a 4D SU(3) ILDG file; with ``check``, verify the SciDAC checksum (when the file has one)."""
    path = Path(path)
    if not path.is_file():
        raise IldgError(f"no such ILDG file: {path}")
    records = read_lime(path.read_bytes(), str(path))
    found = {kind: data for kind, _, data in records}
    for need in ("ildg-format", "ildg-binary-data"):
        if need not in found:
            raise IldgError(f"{path}: no {need} record")
    xml = found["ildg-format"].decode("utf-8", errors="replace")
    field, precision = _tag(xml, "field", path), int(_tag(xml, "precision", path))
    dims = tuple(int(_tag(xml, f"l{a}", path)) for a in "xyzt")
    if field != "su3gauge" or precision not in _DTYPES:
        raise IldgError(f"{path}: field {field}, precision {precision} is not supported (su3gauge, 32|64)")
    data = found["ildg-binary-data"]
    shape = (*dims[::-1], 4, 3, 3, 2)
    expected = int(np.prod(shape)) * precision // 8
    if len(data) != expected:
        raise IldgError(f"{path}: ildg-binary-data holds {len(data)} bytes, su3gauge {dims} needs {expected}")
    if check and "scidac-checksum" in found:
        text = found["scidac-checksum"].decode("utf-8", errors="replace")
        stated = (int(_tag(text, "suma", path), 16), int(_tag(text, "sumb", path), 16))
        computed = scidac_checksum(data, int(np.prod(dims)))
        if stated != computed:
            raise IldgError(f"{path}: scidac-checksum states suma/sumb {stated[0]:x}/{stated[1]:x}, "
                            f"the data give {computed[0]:x}/{computed[1]:x}")
    links = _from_file_order(np.frombuffer(data, dtype=_DTYPES[precision]).reshape(shape))
    lfn = found.get("ildg-data-lfn", b"").decode("utf-8", errors="replace")
    return IldgConfig(links, lfn, tuple(kind for kind, _, _ in records))


def export_from_ensemble(ensemble: str | Path, out: str | Path, *, index: int = -1, chain: int = 0,
                         precision: int = 64) -> Path:
    """Write configuration ``index`` (negative: from the end), chain ``chain``, of a 4D SU(3) replica
    file as an ILDG file; the logical file name is ``<ensemble_id>/<traj>``."""
    from mcmc.io.single import stored_config

    links, traj, ensemble_id = stored_config(ensemble, index, chain)
    lfn = f"{ensemble_id}/{traj}"
    return write_ildg(out, links, precision=precision, lfn=lfn)
