"""Shared test settings: one torch thread for every test. The test tensors are small, and on a 2-core
machine that is shared with other work, intra-op threading makes them several times slower, not faster
(a second thread only spin-waits, or contends with numba's serial local sweeps)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Restore one intra-op thread around each test, whatever a previous test set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
