"""What one φ⁴ flow training step and one proposal batch consist of, on any device (issue 19).

Usage (from the repository root, PYTHONPATH=.):
    python runs/bench/flow_step_profile.py [--device cuda] [--L 32] [--batch 2048] [--proposals 8192]
        [--autocast off|bf16] [--compile off|nets|flow] [--time-limit 40]

The flow is issue 19's: 8 rational-quadratic spline couplings with 32-32 channels and a Fourier layer,
m² = −4, λ = 4.572. One training step is ``flows.train._train_step`` (draw, push, action, backward,
gradient clip, Adam, the host copy of the metrics); one proposal batch is ``flows.proposal.proposal_flow``
(float64 map with float32 conditioners, and float32) sampling ``--proposals`` configurations.

Printed for each: an operator census of one eager call taken with a ``TorchDispatchMode`` (every aten
op, so every kernel launch of eager mode, backward included): the op count, the most frequent ops,
every op that synchronises the host with the device (``_local_scalar_dense``: ``.item()``, ``float()``;
copies to the CPU), every op with a data-dependent output shape (``nonzero``, boolean indexing, …), and
every op touching float64 tensors; then the wall time per call (after warm-up; compile time shown
apart) and the top operators of ``torch.profiler`` (on CUDA: the top 15 CUDA kernels by time and the
kernel launches and synchronisations per call). A ``--time-limit`` alarm ends the script with what it
has printed so far (exit status 124).
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

PHI4 = {"shape": (32, 32), "m2": -4.0, "lam": 4.572}
FLOW = {"coupling": "spline", "n_layers": 8, "hidden": [32, 32]}
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "item"}


class Census(TorchDispatchMode):
    """Counts every aten op dispatched inside the block, with the syncs, dynamic shapes and float64 use."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self.dynamic: collections.Counter[str] = collections.Counter()
        self.float64: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name.removeprefix("aten::")
        self.ops[name] += 1
        leaves = torch.utils._pytree.tree_leaves((args, kwargs, out))
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors}
        tags = set(getattr(func, "tags", ()))
        if name in SYNC_OPS or torch.Tag.data_dependent_output in tags or (
                name in ("_to_copy", "copy_") and len(devices) > 1):
            where = "device to host" if len(devices) > 1 else "/".join(sorted(devices))
            self.syncs[f"{name} ({where})"] += 1  # a sync only where a non-CPU device is involved
        if torch.Tag.dynamic_output_shape in tags or (
                name.startswith("index") and any(t.dtype == torch.bool for t in tensors)):
            self.dynamic[name] += 1
        if any(t.dtype in (torch.float64, torch.complex128) for t in tensors):
            self.float64[name] += 1
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def census(fn, label: str) -> None:
    with Census() as c:
        fn()
    print(f"\n[{label}] eager op census of one call: {sum(c.ops.values())} aten ops "
          f"({len(c.ops)} kinds); most frequent: " + ", ".join(f"{k} {v}" for k, v in c.ops.most_common(12)))
    print(f"  host reads of tensor values (syncs where not cpu): {dict(c.syncs) or 'none'}")
    print(f"  data-dependent output shapes: {dict(c.dynamic) or 'none'}")
    print(f"  ops on float64/complex128 tensors: {sum(c.float64.values())} "
          f"{dict(c.float64.most_common(15)) if c.float64 else ''}")


def timed(fn, device: torch.device, label: str, reps: int) -> float:
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    per_call = (time.perf_counter() - t0) / reps
    print(f"[{label}] first call (compile, warm-up) {first:.3f} s; then {per_call * 1e3:.2f} ms per call "
          f"over {reps} calls")
    return per_call


def profiled(fn, device: torch.device, label: str, reps: int = 2) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(reps):
            fn()
        sync(device)
    events = prof.key_averages()
    if device.type != "cuda":
        print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
        return
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    syncs = [e for e in prof.events() if "Synchronize" in e.name or "cudaMemcpy" in e.name]
    busy_ms = sum(e.time_range.elapsed_us() for e in kernels) / reps / 1e3
    print(f"[{label}] CUDA kernels per call: {len(kernels) / reps:.0f} (their summed time {busy_ms:.1f} ms); "
          f"cuda*Synchronize/cudaMemcpy calls per call: {len(syncs) / reps:.1f}")
    for key in ("self_device_time_total", "self_cuda_time_total"):  # the name differs between torch versions
        try:
            print(events.table(sort_by=key, row_limit=15, max_name_column_width=60))
            return
        except (AttributeError, KeyError, ValueError) as error:
            print(f"(profiler table sorted by {key} failed: {error})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--batch", type=int, default=None, help="training batch (2048 on CUDA, 64 on the CPU)")
    ap.add_argument("--proposals", type=int, default=None, help="proposals (8192 CUDA, 64 CPU)")
    ap.add_argument("--autocast", default="off", choices=["off", "bf16"])
    ap.add_argument("--compile", default="off", choices=["off", "nets", "flow"])
    ap.add_argument("--time-limit", type=int, default=40)
    args = ap.parse_args()

    def expire(*_):
        print(f"\ntime limit of {args.time_limit} s reached; stopping", flush=True)
        sys.exit(124)

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(args.time_limit)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (2048 if gpu else 64)
    n_prop = args.proposals or (8192 if gpu else 64)
    if not gpu:
        torch.set_num_threads(1)

    from flows.accel import AccelConfig, training_accel
    from flows.collective import Collective
    from flows.model import build_flow
    from flows.proposal import proposal_flow
    from flows.train import TrainConfig, _train_step, adam
    from lattice.scalar import Phi4

    theory = Phi4((args.L, args.L), m2=PHI4["m2"], lam=PHI4["lam"])
    flow = build_flow(theory, FLOW, generator=torch.Generator().manual_seed(0), device=device)
    config = TrainConfig(steps=10**6, batch_size=batch)
    optimizer = adam(flow, 1e-4)
    g = torch.Generator(device=device).manual_seed(1)
    box = {"step": 0}

    def step():
        _train_step(flow, theory, config, optimizer, g, box["step"], 0.0, Collective())
        box["step"] += 1

    print(f"device {device}; φ⁴ L={args.L}, flow {FLOW} + Fourier layer; training batch {batch}, "
          f"autocast {args.autocast}, compile {args.compile}; proposal batch {n_prop}", flush=True)
    census(step, f"train step, batch {batch}, eager fp32")
    accel = AccelConfig(autocast=args.autocast, compile=args.compile)
    with training_accel(flow, accel, device) as used:
        label = f"train step, batch {batch}, {used}"
        per_step = timed(step, device, label, reps=5 if gpu else 2)
        print(f"[{label}] {batch / per_step:.4g} samples/s")
        profiled(step, device, label)
    for dtype in ("float64", "float32"):
        proposal = proposal_flow(flow, dtype, args.compile, device)
        extra = ", float32 conditioners" if dtype == "float64" else ""
        label = f"proposal batch {n_prop}, {dtype} map{extra}"

        def propose(proposal=proposal):
            with torch.inference_mode():
                proposal.sample(n_prop, g)

        if args.compile == "off":
            census(propose, label)
        per_call = timed(propose, device, label, reps=3 if gpu else 1)
        print(f"[{label}] {n_prop / per_call:.4g} proposals/s")
        profiled(propose, device, label, reps=1)
    signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
