"""ILDG/LIME: a file whose bytes are built by hand from the format description, round trips, checks."""

import struct
import zlib

import numpy as np
import pytest
import torch

from lattice.sun import haar
from mcmc.io.ildg import IldgError, read_ildg, read_lime, write_ildg


def hand_record(kind: bytes, data: bytes, flags: int) -> bytes:
    """LIME: magic, version 1, flags, length (big-endian), 128-byte type, data, zeros to 8 bytes."""
    pad = (8 - len(data) % 8) % 8
    return struct.pack(">IHHQ", 0x456789AB, 1, flags, len(data)) + kind.ljust(128, b"\0") + data + b"\0" * pad


def hand_checksum(data: bytes, n_sites: int) -> tuple[int, int]:
    size, a, b = len(data) // n_sites, 0, 0
    for r in range(n_sites):
        c = zlib.crc32(data[r * size : (r + 1) * size])
        ra, rb = r % 29, r % 31
        a ^= ((c << ra) | (c >> (32 - ra))) & 0xFFFFFFFF
        b ^= ((c << rb) | (c >> (32 - rb))) & 0xFFFFFFFF
    return a, b


def hand_built_file():
    """A 1 × 1 × 1 × 2 lattice: all links 1 except U_y at t = 1, M = ω P (P cyclic, ω = e^{2πi/3})."""
    m = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=complex) * np.exp(2j * np.pi / 3)
    eye = np.eye(3, dtype=complex)
    binary = b""
    for t in range(2):  # t slowest, x fastest; at each site μ = x, y, z, t; rows, then (re, im)
        for mu in range(4):
            u = m if (t == 1 and mu == 1) else eye
            binary += b"".join(struct.pack(">dd", z.real + 0.0, z.imag + 0.0) for z in u.reshape(-1))  # +0.0
    assert len(binary) == 2 * 4 * 9 * 16
    fmt = (b'<?xml version="1.0"?><ildgFormat xmlns="http://www.lqcd.org/ildg"><version>1.0</version>'
           b"<field>su3gauge</field><precision>64</precision><lx>1</lx><ly>1</ly><lz>1</lz><lt>2</lt>"
           b"</ildgFormat>")
    a, b = hand_checksum(binary, 2)
    check = f"<scidacChecksum><version>1.0</version><suma>{a:x}</suma><sumb>{b:x}</sumb></scidacChecksum>"
    raw = (hand_record(b"ildg-format", fmt, 0x8000) + hand_record(b"ildg-binary-data", binary, 0)
           + hand_record(b"scidac-checksum", check.encode(), 0x4000)
           + hand_record(b"ildg-data-lfn", b"lfn://test/1", 0xC000))
    return raw, m, binary


def test_hand_built_file_reads_back(tmp_path):
    raw, m, _ = hand_built_file()
    path = tmp_path / "hand.ildg"
    path.write_bytes(raw)
    cfg = read_ildg(path)
    assert cfg.links.shape == (4, 1, 1, 1, 2, 3, 3)
    assert cfg.lfn == "lfn://test/1"
    np.testing.assert_array_equal(cfg.links[1, 0, 0, 0, 1], m)
    np.testing.assert_array_equal(cfg.links[0, 0, 0, 0, 1], np.eye(3))
    assert cfg.records == ("ildg-format", "ildg-binary-data", "scidac-checksum", "ildg-data-lfn")
    # latflow writes the same binary record and checksum for these links
    out = write_ildg(tmp_path / "mine.ildg", cfg.links, lfn="lfn://test/1")
    ours = {k: d for k, _, d in read_lime(out.read_bytes())}
    theirs = {k: d for k, _, d in read_lime(raw)}
    assert ours["ildg-binary-data"] == theirs["ildg-binary-data"]
    assert b"<suma>" in ours["scidac-checksum"] and read_ildg(out).lfn == "lfn://test/1"
    for kind in ("suma", "sumb"):
        value = theirs["scidac-checksum"].split(f"<{kind}>".encode())[1].split(b"<")[0]
        assert f"<{kind}>{value.decode()}<".encode() in ours["scidac-checksum"]


@pytest.mark.parametrize("precision", [64, 32])
def test_round_trip(tmp_path, precision):
    links = haar((4, 2, 3, 2, 4), 3, torch.Generator().manual_seed(1)).numpy()
    path = write_ildg(tmp_path / "cfg.ildg", links, precision=precision)
    raw = path.read_bytes()
    assert len(raw) % 8 == 0 and raw[:4] == bytes.fromhex("456789ab")
    back = read_ildg(path).links
    assert np.abs(back - links).max() < (1e-15 if precision == 64 else 1e-6)


def test_damage_is_detected(tmp_path):
    raw, _, binary = hand_built_file()
    broken = bytearray(raw)
    broken[raw.index(binary) + 100] ^= 0x01  # one bit of the binary data
    path = tmp_path / "bad.ildg"
    path.write_bytes(bytes(broken))
    with pytest.raises(IldgError, match="scidac-checksum"):
        read_ildg(path)
    path.write_bytes(raw[:-20])
    with pytest.raises(IldgError, match="truncated"):
        read_ildg(path)
    path.write_bytes(b"BEGIN_HEADER" + raw)
    with pytest.raises(IldgError, match="not a LIME file"):
        read_ildg(path)


def test_export_ildg_command(tmp_path, capsys):
    from mcmc.cli import main
    from mcmc.io.store import Block, EnsembleWriter

    links = haar((4, 2, 2, 2, 2), 3, torch.Generator().manual_seed(2)).numpy()
    path = tmp_path / "su3.r0.h5"
    writer = EnsembleWriter.create(path, field_shape=links.shape, n_chains=2, field_dtype="complex128",
                                   obs_names=[], attrs={"ensemble_id": "su3|r0"})
    configs = np.stack([np.stack([links, links.conj()]), np.stack([links.conj(), links])])
    nan = np.full((2, 2), np.nan)
    writer.append(Block(configs, np.array([10, 20]), np.ones((2, 2), bool), nan, nan, nan, nan, nan, {}))
    writer.close(complete=True)
    out = tmp_path / "cfg.ildg"
    assert main(["export-ildg", str(path), str(out), "--index", "1", "--chain", "1"]) == 0
    assert "ILDG" in capsys.readouterr().out
    got = read_ildg(out)
    assert np.abs(got.links - links).max() == 0 and got.lfn == "su3|r0/20"
    assert main(["export-ildg", str(path), str(out), "--index", "5"]) == 2
    assert "no configuration 5" in capsys.readouterr().err
