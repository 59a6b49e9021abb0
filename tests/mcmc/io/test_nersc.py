"""NERSC gauge files: exact round trips, the byte layout and checksum written out by hand, refusals of
damaged files, and ``latflow export-nersc`` from an SU(3) ensemble."""

import struct

import numpy as np
import pytest
import torch

from lattice.sun import haar
from lattice.wilson import SUN
from mcmc.cli import main
from mcmc.io.nersc import NerscError, read_nersc, third_row, write_nersc
from mcmc.io.store import Block, EnsembleWriter

SHAPE = (2, 3, 4, 5)  # Lx, Ly, Lz, Lt: all different, so any axis mix-up shows


@pytest.fixture(scope="module")
def links():
    return haar((4, *SHAPE), 3, torch.Generator().manual_seed(7)).numpy()


def body(path):
    raw = path.read_bytes()
    end = raw.index(b"END_HEADER\n") + len(b"END_HEADER\n")
    return raw[:end].decode(), raw[end:]


@pytest.mark.parametrize(("storage", "tol"), [("3x3", 0.0), ("3x2", 5e-15)])
def test_round_trip_double(tmp_path, links, storage, tol):
    header = write_nersc(tmp_path / "cfg", links, storage=storage)
    got = read_nersc(tmp_path / "cfg")
    assert got.links.shape == (4, *SHAPE, 3, 3)
    assert np.abs(got.links - links).max() <= tol
    assert header["DATATYPE"] == {"3x3": "4D_SU3_GAUGE_3x3", "3x2": "4D_SU3_GAUGE"}[storage]
    assert [header[f"DIMENSION_{k}"] for k in range(1, 5)] == [str(n) for n in SHAPE]
    assert header["FLOATING_POINT"] == "IEEE64BIG" and got.header["CHECKSUM"] == header["CHECKSUM"]


def test_round_trip_single(tmp_path, links):
    write_nersc(tmp_path / "cfg", links, storage="3x2", precision="single")
    got = read_nersc(tmp_path / "cfg")
    assert got.header["FLOATING_POINT"] == "IEEE32BIG" and np.abs(got.links - links).max() < 1e-6


def test_plaquette_and_link_trace_follow_lattice_wilson(tmp_path, links):
    header = write_nersc(tmp_path / "cfg", links)
    theory = SUN(SHAPE, beta=1.0, N=3)
    expected = float(theory.observables(torch.from_numpy(links)[None])["plaquette"][0])
    assert float(header["PLAQUETTE"]) == pytest.approx(expected, abs=1e-14)
    assert float(header["LINK_TRACE"]) == pytest.approx(np.trace(links, axis1=-2, axis2=-1).real.mean() / 3)
    cold = write_nersc(tmp_path / "cold", theory.cold_field(1)[0])
    assert float(cold["PLAQUETTE"]) == 1.0 and float(cold["LINK_TRACE"]) == 1.0


def test_byte_layout_and_checksum_by_hand(tmp_path):
    """x fastest, t slowest, then μ, row, column, (re, im) as big-endian doubles; the checksum is the sum
    of the big-endian 32-bit words modulo 2^32."""
    u = np.broadcast_to(np.eye(3, dtype=np.complex128), (4, *SHAPE, 3, 3)).copy()
    mu, x, y, z, t = 2, 1, 2, 3, 4
    u[mu, x, y, z, t] = np.diag([1j, -1j, 1.0])
    header = write_nersc(tmp_path / "cfg", u)
    _, data = body(tmp_path / "cfg")
    lx, ly, lz, _ = SHAPE
    site = ((t * lz + z) * ly + y) * lx + x
    offset = ((site * 4 + mu) * 9 + 0) * 16  # row 0, column 0
    assert struct.unpack(">dd", data[offset : offset + 16]) == (0.0, 1.0)
    assert struct.unpack(">dd", data[offset + 4 * 16 : offset + 5 * 16]) == (0.0, -1.0)  # row 1, col 1
    words = struct.unpack(f">{len(data) // 4}I", data)
    assert int(header["CHECKSUM"], 16) == sum(words) % 2**32


def test_third_row_is_the_conjugate_cross_product(links):
    assert np.abs(third_row(links[..., :2, :]) - links[..., 2, :]).max() < 1e-14


def test_damage_is_refused(tmp_path, links):
    write_nersc(tmp_path / "cfg", links)
    head, data = body(tmp_path / "cfg")
    flipped = bytearray(data)
    flipped[1000] ^= 0x10
    (tmp_path / "bad").write_bytes(head.encode() + bytes(flipped))
    with pytest.raises(NerscError, match="CHECKSUM in the header is"):
        read_nersc(tmp_path / "bad")
    plaq = next(line for line in head.splitlines() if line.startswith("PLAQUETTE"))
    (tmp_path / "plaq").write_bytes(head.replace(plaq, "PLAQUETTE = 0.25").encode() + data)
    with pytest.raises(NerscError, match="PLAQUETTE in the header is 0.25"):
        read_nersc(tmp_path / "plaq")
    (tmp_path / "short").write_bytes(head.encode() + data[:-8])
    with pytest.raises(NerscError, match="data bytes"):
        read_nersc(tmp_path / "short")
    with pytest.raises(NerscError, match="4D SU\\(3\\) links"):
        write_nersc(tmp_path / "u1", np.zeros((2, 4, 4)))


def test_export_nersc_command(tmp_path, capsys, links):
    path = tmp_path / "su3.r0.h5"
    writer = EnsembleWriter.create(
        path,
        field_shape=(4, *SHAPE, 3, 3),
        n_chains=2,
        field_dtype="complex128",
        obs_names=[],
        attrs={"ensemble_id": "su3|r0"},
    )
    configs = np.stack([np.stack([links, links.conj()]), np.stack([links.conj(), links])])
    nan = np.full((2, 2), np.nan)
    writer.append(Block(configs, np.array([10, 20]), np.ones((2, 2), bool), nan, nan, nan, nan, nan, {}))
    writer.close(complete=True)
    out = tmp_path / "cfg.nersc"
    code = main(["export-nersc", str(path), str(out), "--index", "1", "--chain", "1", "--storage", "3x2"])
    assert code == 0 and "4D_SU3_GAUGE" in capsys.readouterr().out
    got = read_nersc(out)
    assert np.abs(got.links - links).max() < 5e-15
    assert got.header["SEQUENCE_NUMBER"] == "20" and got.header["ENSEMBLE_ID"] == "su3|r0"
    assert main(["export-nersc", str(path), str(out), "--index", "5"]) == 2
    assert "no configuration 5" in capsys.readouterr().err
