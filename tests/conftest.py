"""Shared test settings: one torch thread. The test tensors are small, and on a 2-core machine that
is shared with other work, intra-op threading makes them several times slower, not faster."""

import torch

torch.set_num_threads(1)
