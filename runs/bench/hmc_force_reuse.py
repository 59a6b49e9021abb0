"""CPU milliseconds per HMC trajectory of 4D SU(3) on 4⁴ (β = 5.5, 2 chains, complex128, one thread).

Usage (from the repository root):
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python runs/bench/hmc_force_reuse.py leapfrog 4
Prints the best of 3 repeats of 5 trajectories, in process CPU time (robust to other jobs on the
machine). Run it with PYTHONPATH pointing at two checkouts to compare them.
"""

import sys
import time

import torch

from lattice.wilson import SUN
from mcmc.kernels.hmc import HMC


def main() -> None:
    integrator, n_steps = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    theory = SUN((4, 4, 4, 4), 5.5, 3)
    kernel = HMC(theory, tau=1.0, n_steps=n_steps, integrator=integrator)
    generator = torch.Generator().manual_seed(1)
    state = kernel.init(theory.random_field(2, generator, dtype=torch.complex128))
    for _ in range(3):
        state, _ = kernel.step(state, generator)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(5):
            state, _ = kernel.step(state, generator)
        best = min(best, (time.process_time() - start) / 5)
    print(f"SU(3) 4^4 B=2 {integrator} n_steps={n_steps}: {1e3 * best:.1f} CPU ms/trajectory")


if __name__ == "__main__":
    main()
