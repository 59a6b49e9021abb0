"""Shared test settings: small, deterministic thread use so timings are stable on a 2-core machine."""

import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
