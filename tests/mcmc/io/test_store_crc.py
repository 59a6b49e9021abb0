"""The compiled row checksums of ``mcmc.io.store`` equal ``zlib.crc32`` of each row's bytes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from mcmc.io.store import config_crc32, rows_crc32


def _zlib_rows(values: np.ndarray) -> list[int]:
    return [zlib.crc32(np.ascontiguousarray(row).tobytes()) for row in values]


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "int64", "uint32", "bool"])
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (17, 4), (5, 3, 2)])
def test_rows_crc32_is_zlib_crc32_of_each_row(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    values = (rng.normal(size=shape) * 1e3).astype(dtype)
    got = rows_crc32(values)
    assert got.dtype == np.uint32 and got.shape == (shape[0],)
    assert got.tolist() == _zlib_rows(values)


def test_rows_crc32_reads_non_contiguous_input_in_c_order() -> None:
    values = np.arange(60, dtype=np.float64).reshape(6, 10)[:, ::2]
    assert rows_crc32(values).tolist() == _zlib_rows(values)


def test_config_crc32_is_per_configuration_and_changes_with_one_bit() -> None:
    rng = np.random.default_rng(8)
    configs = rng.normal(size=(3, 4, 5, 5))
    crc = config_crc32(configs)
    assert crc.shape == (3, 4)
    assert crc.tolist() == [[zlib.crc32(configs[i, j].tobytes()) for j in range(4)] for i in range(3)]
    flipped = configs.copy()
    flipped.view(np.uint64)[1, 2, 3, 4] ^= np.uint64(1)
    changed = config_crc32(flipped) != crc
    assert changed.sum() == 1 and changed[1, 2]
