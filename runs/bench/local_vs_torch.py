"""Local-update baselines (numba, ``mcmc.kernels.local``) against torch HMC (``mcmc.kernels.hmc``),
measured in one run.

For each theory, at the same volume and number of chains B, it reports

* the time per local update (one Metropolis sweep for φ⁴; one heatbath + ``n_overrelax`` overrelaxation
  sweeps for gauge theories) and per HMC trajectory (τ = 1, 10 Omelyan steps: the card defaults),
  and their ratio;
* site or link updates per second of the local kernel (B · sites-or-links · sweeps per update / time);
* τ_int of a few observables (Gamma method, chains as replicas) and the cost of one independent sample,
  2 τ_int × CPU seconds per update / B, so that the figure of merit is cost_HMC / cost_local.

Times are wall clock and CPU seconds of this process; on a shared machine the CPU figures are the
robust ones (with ``--threads 1`` they are the work done; with more threads they add the threads up).

    .venv/bin/python runs/bench/local_vs_torch.py [--seconds 4] [--threads 1] [--therm 200] [--quick]

Both kernels start from the same fields, thermalised by ``--therm`` local updates from a hot start.

The numba kernels run serially on one core; HMC uses ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from lattice.scalar import Phi4
from lattice.u1 import U1
from lattice.wilson import SUN
from mcmc.kernels.hmc import HMC
from mcmc.kernels.local.phi4 import LocalPhi4
from mcmc.kernels.local.sun import LocalSUN
from mcmc.kernels.local.u1 import LocalU1
from observables.gamma import gamma_analysis


@dataclass(frozen=True)
class Case:
    label: str
    theory: object
    local: object
    observables: tuple[str, ...]
    n_chains: int
    updates_per_step: int  # site or link updates per chain per local step


def cases(quick: bool) -> list[Case]:
    n_or = 2
    phi4 = Phi4((16, 16) if quick else (32, 32), -4.0, 8.0)
    u1 = U1((16, 16), 2.0)
    su2 = SUN((16, 16), 2.0, 2)
    su3 = SUN((4, 4, 4, 4), 5.5, 3)
    out = [
        Case(f"phi4 {phi4.shape} m2=-4 lam=8", phi4, LocalPhi4(phi4, n_hits=3), ("mag2", "absmag"), 16,
             phi4.volume * 3),
        Case("u1 (16, 16) beta=2", u1, LocalU1(u1, n_overrelax=n_or), ("plaquette", "Q2"), 16,
             2 * u1.volume * (1 + n_or)),
        Case("su2 (16, 16) beta=2", su2, LocalSUN(su2, n_overrelax=n_or), ("plaquette",), 16,
             2 * su2.volume * (1 + n_or)),
    ]
    if not quick:
        out.append(Case("su3 (4, 4, 4, 4) beta=5.5", su3, LocalSUN(su3, n_overrelax=n_or), ("plaquette",), 4,
                        4 * su3.volume * (1 + n_or)))
    return out


@dataclass(frozen=True)
class Timing:
    seconds_per_step: float  # wall clock
    cpu_per_step: float      # CPU seconds of this process (all its threads)
    n_steps: int
    tau: dict[str, tuple[float, float]]
    acceptance: float


def thermalised(case: Case, n_updates: int, seed: int) -> torch.Tensor:
    """Start fields ``(B, *field_shape)`` after ``n_updates`` local updates from a hot start (this also
    compiles the numba kernel), so that both samplers are timed in equilibrium from the same fields."""
    gen = torch.Generator().manual_seed(seed)
    state = case.local.init(case.theory.random_field(case.n_chains, gen))
    for _ in range(n_updates):
        state, _ = case.local.step(state, gen)
    return state.x


def measure(theory: object, kernel: object, x: torch.Tensor, names: tuple[str, ...], seconds: float,
            seed: int) -> Timing:
    """From fields ``x``, 5 untimed steps, then steps for about ``seconds`` (at least 50): time per step,
    acceptance and τ_int of the observables ``names``."""
    gen = torch.Generator().manual_seed(seed)
    state = kernel.init(x)
    for _ in range(5):
        state, _ = kernel.step(state, gen)
    series: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    acc, n, elapsed, cpu = 0.0, 0, 0.0, 0.0
    while elapsed < seconds or n < 50:
        t0, c0 = time.perf_counter(), time.process_time()
        state, info = kernel.step(state, gen)
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0
        acc += float(info.accepted.double().mean())
        n += 1
        obs = theory.observables(state.x)
        for name in names:
            series[name].append(obs[name])
    tau = {}
    for name in names:
        res = gamma_analysis(torch.stack(series[name]).numpy())
        tau[name] = (res.tau_int, res.tau_int_err)
    return Timing(elapsed / n, cpu / n, n, tau, acc / n)


def fmt_tau(t: tuple[float, float]) -> str:
    return f"{t[0]:.2f}({t[1]:.2f})" if math.isfinite(t[0]) else "nan"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="sampling time per kernel and theory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (HMC; the local kernels' action)")
    ap.add_argument("--therm", type=int, default=200, help="local updates from a hot start before timing")
    ap.add_argument("--quick", action="store_true", help="smaller lattices, no SU(3)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} torch thread(s); numba kernels serial; "
          f"~{args.seconds:g} s sampling per kernel")
    for case in cases(args.quick):
        hmc = HMC(case.theory, 1.0, 10, "omelyan")
        x = thermalised(case, args.therm, 0)
        local = measure(case.theory, case.local, x, case.observables, args.seconds, 1)
        traj = measure(case.theory, hmc, x, case.observables, args.seconds, 2)
        rate = case.n_chains * case.updates_per_step / local.cpu_per_step
        print(f"\n{case.label}, B = {case.n_chains}")
        print(f"  local: {local.seconds_per_step * 1e3:9.2f} ms/update wall, "
              f"{local.cpu_per_step * 1e3:9.2f} ms CPU "
              f"({local.n_steps} updates); {rate / 1e6:.2f} M site-or-link updates/s (CPU)")
        print(f"  HMC:   {traj.seconds_per_step * 1e3:9.2f} ms/traj.  wall, "
              f"{traj.cpu_per_step * 1e3:9.2f} ms CPU "
              f"({traj.n_steps} trajectories); acceptance {traj.acceptance:.3f}")
        print(f"  time per HMC trajectory / time per local update: "
              f"{traj.seconds_per_step / local.seconds_per_step:.1f} wall, "
              f"{traj.cpu_per_step / local.cpu_per_step:.1f} CPU")
        for name in case.observables:
            cost_local = 2 * local.tau[name][0] * local.cpu_per_step / case.n_chains
            cost_hmc = 2 * traj.tau[name][0] * traj.cpu_per_step / case.n_chains
            print(f"  {name:>9}: tau_int local {fmt_tau(local.tau[name])}, HMC {fmt_tau(traj.tau[name])}; "
                  f"CPU s per independent sample: local {cost_local:.2e}, HMC {cost_hmc:.2e}, "
                  f"HMC/local = {cost_hmc / cost_local:.1f}")


if __name__ == "__main__":
    main()
