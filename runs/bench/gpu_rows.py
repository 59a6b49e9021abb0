"""The rows of issue 19's speed table, one section per call, for `runs/bench/gpu_check.sh` and its CPU
counterparts (`runs/bench/gpu_check_cpu.json`).

Usage (from the repository root, PYTHONPATH=.):
    python runs/bench/gpu_rows.py ROW [--device cuda] [--scale gpu|cpu]     # JSON lines on stdout
    python runs/bench/gpu_rows.py table ROWS.jsonl CPU.json                 # the table of gpu_check.sh

ROW is one of: phi4_hmc, phi4_train, phi4_sample, su3_force, gauge_proposals, l32_card, and the flow rows
flow_train_eager, flow_train_nets, flow_train_flow (accel.compile off / nets / flow), flow_proposals,
flow_ess (bf16 against fp32 training, float32 against float64 proposals). Every figure is
printed as one JSON line {"key", "what", "value", "unit", "setting"}; a larger value is better for
every unit but "us/link". ``--scale cpu`` uses sizes one CPU core finishes in seconds; the per-unit
figures (configurations/s, samples/s, µs per link) are what the table compares.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

PHI4 = {"shape": (32, 32), "m2": -4.0, "lam": 4.572}
PHI4_FLOW = {"coupling": "spline", "n_layers": 8, "hidden": [32, 32]}


def emit(key, what, value, unit, setting):
    print(json.dumps({"key": key, "what": what, "value": float(value), "unit": unit, "setting": setting}),
          flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, device, min_s=1.0, max_reps=10_000):
    """Calls per second of ``fn`` after one warm-up call, timed over at least ``min_s`` seconds."""
    fn()
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        if reps >= max_reps or time.perf_counter() - t0 >= min_s:
            break
    sync(device)
    return reps / (time.perf_counter() - t0)


def phi4_theory():
    from lattice.scalar import Phi4

    return Phi4(PHI4["shape"], m2=PHI4["m2"], lam=PHI4["lam"])


def row_phi4_hmc(device, scale):
    from mcmc.kernels.compiled import CompiledHMC
    from mcmc.kernels.hmc import HMC

    theory = phi4_theory()
    eager, fused = HMC(theory, 1.0, 10, "omelyan"), CompiledHMC(theory, 1.0, 10, "omelyan")
    runs = ([("eager", eager, 512), ("eager", eager, 8192), ("compiled", fused, 8192)] if scale == "gpu"
            else [("eager", eager, 64), ("compiled", fused, 64)])
    for name, kernel, chains in runs:
        g = torch.Generator(device=device).manual_seed(1)
        box = {"s": kernel.init(0.5 * torch.randn((chains, *theory.shape), generator=g, device=device))}

        def step(box=box, kernel=kernel, g=g):
            box["s"], box["i"] = kernel.step(box["s"], g)

        steps = rate(step, device, min_s=1.5)
        acc = box["i"].accept_prob.mean().item()
        emit(f"phi4_hmc.{name}", f"φ⁴ L=32 HMC, {name}, {chains} chains (acc {acc:.2f})",
             steps * chains, "configs/s",
             f"m2=-4 lam=4.572 tau=1 omelyan n_steps=10 float32; HMC.step loop; chains={chains}")


def _train_steps(flow, theory, device, batch, steps, seed=0):
    from flows.train import adam

    optimizer = adam(flow, 1e-3)
    g = torch.Generator(device=device).manual_seed(seed)

    def one():
        optimizer.zero_grad(set_to_none=True)
        x, logq = flow.forward_with_logq(batch, g)
        (logq + theory.action(x)).mean().backward()
        optimizer.step()

    for _ in range(steps):
        one()
    return one


def _ess_and_error(flow, theory, device, n=8192, blocks=16):
    """The ESS of :func:`_ess` on ``n`` samples and its error from ``blocks`` independent blocks of n/blocks
    samples (standard deviation of the block ESS over √blocks; block ESS estimates are biased for heavy
    tails, so this is a scale, not a bound)."""
    g = torch.Generator(device=device).manual_seed(123)
    with torch.no_grad():
        x, logq = flow.sample(n, g)
        logw = (-theory.action(x) - logq).to(torch.float64)

    def ess(w):
        return float(torch.exp(2 * torch.logsumexp(w, 0) - torch.logsumexp(2 * w, 0)) / w.numel())

    parts = torch.tensor([ess(w) for w in logw.chunk(blocks)], dtype=torch.float64)
    return ess(logw), float(parts.std() / blocks**0.5)


def _ess(flow, theory, device, n=8192):
    """Reweighting ESS per sample, (Σw)² / (n Σw²) with log w = −S − log q, on ``n`` fresh samples."""
    g = torch.Generator(device=device).manual_seed(123)
    with torch.no_grad():
        x, logq = flow.sample(n, g)
        logw = (-theory.action(x) - logq).to(torch.float64)
    return float(torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0)) / n)


def row_phi4_train(device, scale):
    from flows.accel import AccelConfig, training_accel
    from flows.model import build_flow

    theory = phi4_theory()
    batch = 2048 if scale == "gpu" else 64
    base = build_flow(theory, PHI4_FLOW, generator=torch.Generator().manual_seed(0), device=device)
    variants = {"fp32": AccelConfig(tf32=False, channels_last=False),
                "tf32": AccelConfig(tf32=True, channels_last=True),
                "bf16": AccelConfig(tf32=True, channels_last=True, autocast="bf16")}
    if scale == "cpu":
        variants = {"fp32": variants["fp32"]}
    for name, config in variants.items():
        flow = copy.deepcopy(base)
        with training_accel(flow, config, device):
            steps = rate(_train_steps(flow, theory, device, batch, 0), device, min_s=2.0)
        emit(f"phi4_train.{name}", f"φ⁴ L=32 flow training, {name}, batch {batch}", steps * batch,
             "samples/s", f"spline 8 layers hidden 32-32, Adam, AccelConfig={config}")
    if scale != "gpu":
        return
    ess_steps, ess_batch = 150, 512  # ESS unharmed by bf16: same start, same draws, same steps
    for name in ("tf32", "bf16"):
        flow = copy.deepcopy(base)
        with training_accel(flow, variants[name], device):
            _train_steps(flow, theory, device, ess_batch, ess_steps)
        emit(f"phi4_train.{name}.ess", f"ESS after {ess_steps} steps of {name} training (batch {ess_batch})",
             _ess(flow, theory, device), "ESS", "8192 float32 samples, no autocast, seed 123")


def row_phi4_sample(device, scale):
    from flows.model import build_flow

    theory = phi4_theory()
    batch, chains = (8192, 4) if scale == "gpu" else (64, 4)
    flow = build_flow(theory, PHI4_FLOW, generator=torch.Generator().manual_seed(0), device=device)
    proposal = flow.as_float64(conditioner_dtype=torch.float32)
    g = torch.Generator(device=device).manual_seed(2)
    emit("phi4_sample.proposals", f"φ⁴ L=32 flow proposals, batch {batch}",
         batch * rate(lambda: proposal.sample(batch, g), device, min_s=1.0, max_reps=20), "configs/s",
         "spline 8x32-32, float64 map with float32 conditioners (what sampling uses)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from chain_overhead import run

    r = run(32, chains, 4 * batch, device, "float64", theory=theory, flow_config=PHI4_FLOW, batch=batch)
    emit("phi4_sample.chain", f"φ⁴ L=32 flow sampling, {chains} chains, proposal_batch {batch}",
         r["configs_per_s"], "configs/s", "mcmc.driver.run_chain with HDF5 writes and checkpoints "
         f"(runs/bench/chain_overhead.py); outside the refills {r['overhead_per_s']:.3g} configs/s")


def row_su3_force(device, scale):
    from lattice import sun_real
    from lattice.wilson import SUN
    from mcmc.kernels.compiled import compile_available

    cases = [((8, 8, 8, 8), 16), ((16, 16, 16, 16), 1)] if scale == "gpu" else [((8, 8, 8, 8), 1)]
    for shape, chains in cases:
        theory = SUN(shape, beta=6.0, N=3)
        u = theory.random_field(chains, torch.Generator(device=device).manual_seed(0),
                                dtype=torch.float32, device=device)
        links = chains * 4 * theory.volume
        tag = f"{shape[0]}^4, {chains} chain(s), complex64"
        eager = rate(lambda theory=theory, u=u: theory.force(u), device, min_s=1.0)
        emit(f"su3_force.eager.L{shape[0]}", f"4D SU(3) force, eager, {tag}", 1e6 / (eager * links),
             "us/link", "SUN.force (staples + projection), batched complex matmul")
        if compile_available(device) is None:
            fused = torch.compile(lambda v, beta=theory.beta: sun_real.force(v, beta, 3), dynamic=False)
            v = torch.view_as_real(u)
            fast = rate(lambda fused=fused, v=v: fused(v), device, min_s=1.0)
            emit(f"su3_force.fused.L{shape[0]}", f"4D SU(3) force, fused (torch.compile), {tag}",
                 1e6 / (fast * links), "us/link", "lattice.sun_real.force on real/imag parts, compiled")


def row_gauge_proposals(device, scale):
    from flows.registry import flow_family
    from lattice.theories import theory_from_params

    n = 4096 if scale == "gpu" else 64
    cases = {
        "u1_L8": ({"name": "u1", "shape": [8, 8], "beta": 2.0},
                  {"coupling": "spline", "n_layers": 16, "hidden": [8, 8], "loops": True}),
        "u1_L16_sweep": ({"name": "u1", "shape": [16, 16], "beta": 4.0},
                         {"coupling": "spline", "sweep": True, "init": "wilson", "n_layers": 0,
                          "hidden": [4]}),
        "su3_L8": ({"name": "sun", "shape": [8, 8], "beta": 2.0, "N": 3},
                   {"n_layers": 16, "hidden": [8, 8], "offset_order": "decreasing"}),
        "su3_4d_L4_wilson": ({"name": "sun", "shape": [4, 4, 4, 4], "beta": 0.5, "N": 3},
                             {"n_layers": 32, "hidden": [8, 8], "offset_order": "decreasing",
                              "init": "wilson"}),
    }
    for name, (params, config) in cases.items():
        theory = theory_from_params(params)
        flow = flow_family(params["name"]).build(theory, config, generator=torch.Generator().manual_seed(0),
                                                 device=device)
        proposal = flow.as_float64(conditioner_dtype=torch.float32)
        g = torch.Generator(device=device).manual_seed(3)
        emit(f"gauge_proposals.{name}", f"{name} flow proposals, batch {n}",
             n * rate(lambda proposal=proposal, g=g: proposal.sample(n, g), device, min_s=1.0, max_reps=50),
             "configs/s", f"{params} flow={config}; float64 map, float32 conditioners")


def row_l32_card(device, scale):
    """`latflow train` on a φ⁴ L=32 card with the flow and training defaults of the checkout (issue 16)."""
    import subprocess
    import tempfile

    import yaml

    steps = 40 if scale == "gpu" else 3
    with tempfile.TemporaryDirectory() as tmp:
        card = {"theory": {"name": "phi4", "shape": [32, 32], "m2": -4.0, "lam": 4.572},
                "sampler": {"kind": "flow"}, "train": {"steps": steps, "max_seconds": 12},
                "seed": 1, "out": f"{tmp}/out", "device": device.type}
        path = Path(tmp) / "card.yaml"
        path.write_text(yaml.safe_dump(card))
        cmd = [sys.executable, "-m", "mcmc.cli", "train", str(path)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        wall = time.perf_counter() - t0
        saved = torch.load(next(Path(tmp, "out").rglob("*.pt")), map_location="cpu", weights_only=False)
        try:  # the checkpoint's per-step metrics (flows.train): time per step without start-up
            metrics = saved["metrics"]
            batch, secs = float(metrics["batch_size"][-1]), metrics["seconds"]
            per_step = float(secs[-1] - secs[0]) / max(len(secs) - 1, 1)
            emit("l32_card.train", f"latflow train, φ⁴ L=32 default flow, batch {batch:.0f}",
                 batch / per_step, "samples/s", f"card defaults, train.steps={steps}; {len(secs)} steps")
        except (KeyError, IndexError, TypeError):
            emit("l32_card.train", "latflow train, φ⁴ L=32 default flow, whole command", steps / wall,
                 "steps/s", f"card defaults, train.steps={steps}, start-up included")


FAST = {"fp32": dict(tf32=False, channels_last=False),
        "bf16": dict(tf32=True, channels_last=True, autocast="bf16")}


def _flow_train(device, scale, variants, compile_mode="off"):
    """Training samples/s of the L=32 flow for ``variants`` (name, accel keys, batch, cudnn.benchmark); the
    first call (compilation, warm-up) is timed apart and not counted."""
    from flows.accel import AccelConfig, training_accel
    from flows.model import build_flow

    theory = phi4_theory()
    base = build_flow(theory, PHI4_FLOW, generator=torch.Generator().manual_seed(0), device=device)
    for name, keys, batch, bench in variants if scale == "gpu" else variants[:2]:
        if scale == "cpu":
            batch = 16
        flow = copy.deepcopy(base)
        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = bench
        try:
            with training_accel(flow, AccelConfig(compile=compile_mode, **keys), device) as used:
                one = _train_steps(flow, theory, device, batch, 0)
                t0 = time.perf_counter()
                one()
                sync(device)
                first = time.perf_counter() - t0
                steps = rate(one, device, min_s=1.5 if scale == "gpu" else 0.2)
        finally:
            torch.backends.cudnn.benchmark = old
        tag = f"{name}, compile {compile_mode}{', cudnn.benchmark' if bench else ''}, batch {batch}"
        key = f"flow_train.{name}.{compile_mode}{'.bench' if bench else ''}.b{batch}"
        emit(key, f"φ⁴ L=32 flow training, {tag}", steps * batch, "samples/s",
             f"spline 8x32-32 + Fourier, Adam; {used}; first call {first:.1f} s (not counted)")
        if compile_mode != "off":
            emit(key + ".compile_s", f"  first call (compilation) of: {tag}", first, "s", "wall seconds")
        del flow


def row_flow_train_eager(device, scale):
    _flow_train(device, scale, [("fp32", FAST["fp32"], 2048, False), ("bf16", FAST["bf16"], 2048, False),
                                ("bf16", FAST["bf16"], 2048, True), ("bf16", FAST["bf16"], 8192, True)])


def row_flow_train_nets(device, scale):
    _flow_train(device, scale, [("bf16", FAST["bf16"], 2048, True)], "nets")


def row_flow_train_flow(device, scale):
    bf16 = FAST["bf16"]
    _flow_train(device, scale, [("bf16", bf16, 2048, True), ("bf16", bf16, 8192, True)], "flow")
    _compile_check(device)
    if scale == "gpu":
        _flow_train(device, scale, [("fp32", FAST["fp32"], 2048, True)], "flow")


def _compile_check(device, n=1024):
    """Largest |Δx| and |Δ log q| between the eager and the ``compile: flow`` forward of one perturbed flow
    on the same prior draws (fp32, no TF32): compiled and eager must agree to float32 rounding."""
    from flows.accel import AccelConfig, training_accel
    from flows.model import build_flow

    flow = build_flow(phi4_theory(), PHI4_FLOW, generator=torch.Generator().manual_seed(0), device=device)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in flow.parameters():  # leave the identity map
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(device))
        z = flow.draw_prior(n, torch.Generator(device=device).manual_seed(6))
        # both sides without TF32: cuDNN's default (torch.backends.cudnn.allow_tf32 = True) would put the
        # eager convolutions in TF32 and the difference would measure TF32 rounding, not the compiler
        with training_accel(flow, AccelConfig(tf32=False, channels_last=False, compile="off"), device):
            x_ref, logq_ref = flow.push(z)
        with training_accel(flow, AccelConfig(tf32=False, channels_last=False, compile="flow"), device):
            x, logq = flow.push(z)
    emit("flow_train.compile_check.x", "  compile flow vs eager: max |Δx| (fp32, 1024 samples)",
         (x - x_ref).abs().max().item(), "abs diff", "float32 rounding via 8 layers, against |x| of a few")
    emit("flow_train.compile_check.logq", "  compile flow vs eager: max |Δ log q|",
         (logq - logq_ref).abs().max().item(), "abs diff",
         f"against |log q| ~ {logq_ref.abs().mean().item():.3g}, spread {logq_ref.std().item():.3g}")


def row_flow_proposals(device, scale):
    """Proposals/s of the L=32 flow (inference mode) for the float64 map with float32 conditioners, the
    float32 map, and the float32 map with compiled layers; chain updates/s with the float32 proposal."""
    from flows.model import build_flow
    from flows.proposal import proposal_flow

    theory = phi4_theory()
    batch = 8192 if scale == "gpu" else 32
    flow = build_flow(theory, PHI4_FLOW, generator=torch.Generator().manual_seed(0), device=device)
    g = torch.Generator(device=device).manual_seed(2)
    for dtype, mode in (("float64", "off"), ("float32", "off"), ("float32", "flow")):
        proposal = proposal_flow(flow, dtype, mode, device)

        def draw(proposal=proposal):
            with torch.inference_mode():
                proposal.sample(batch, g)

        t0 = time.perf_counter()
        draw()
        sync(device)
        first = time.perf_counter() - t0
        per_s = batch * rate(draw, device, min_s=1.0, max_reps=50)
        what = f"φ⁴ L=32 flow proposals, {dtype} map, compile {mode}, batch {batch}"
        emit(f"flow_proposals.{dtype}.{mode}", what, per_s, "configs/s",
             f"flows.proposal.proposal_flow({dtype!r}, {mode!r}); first call {first:.1f} s (not counted)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from chain_overhead import run

    configs = 4 * batch  # four refills
    for mode in ("off", "flow"):
        r = run(32, 4, configs, device, "float32", theory=theory, flow_config=PHI4_FLOW, compile_mode=mode,
                batch=batch)
        what = f"φ⁴ L=32 flow sampling, float32 proposals, compile {mode}, 4 chains, proposal_batch {batch}"
        emit(f"flow_proposals.chain.float32.{mode}", what, r["configs_per_s"], "configs/s",
             f"mcmc.driver.run_chain with HDF5 writes and checkpoints (runs/bench/chain_overhead.py); "
             f"outside the refills {r['overhead_per_s']:.3g} configs/s")


def row_flow_ess(device, scale):
    """ESS after equal training (same start, same draws) in fp32 and with bf16 conditioners, at L=8 where
    the flow trains far enough for the ESS to tell; then the ESS of the bf16-trained flow's float64 and
    float32 proposals (8192 draws each; the two precisions draw different prior streams)."""
    from flows.accel import AccelConfig, training_accel
    from flows.model import build_flow
    from flows.proposal import proposal_flow
    from flows.train import TrainConfig, train_flow
    from lattice.scalar import Phi4

    theory = Phi4((8, 8), m2=-4.0, lam=8.0)
    steps, batch = (300, 256) if scale == "gpu" else (10, 32)
    base = build_flow(theory, None, generator=torch.Generator().manual_seed(0), device=device)
    config = TrainConfig(steps=steps, batch_size=batch, lr=4e-3)
    trained = {}
    for name in ("fp32", "bf16"):
        flow = copy.deepcopy(base)
        with training_accel(flow, AccelConfig(**FAST[name]), device):
            train_flow(flow, theory, config, torch.Generator(device=device).manual_seed(1), progress=False)
        trained[name] = flow
        value, error = _ess_and_error(flow, theory, device)
        emit(f"flow_ess.{name}", f"φ⁴ L=8 ESS after {steps} steps (batch {batch}), {name} training", value,
             "ESS", f"default flow; 8192 float32 samples, seed 123; ± {error:.3f} (16 blocks)")
    for dtype in ("float64", "float32"):
        proposal = proposal_flow(trained["bf16"], dtype, "off", device)
        value, error = _ess_and_error(proposal, theory, device)
        emit(f"flow_ess.proposal_{dtype}", f"  ESS of the bf16-trained flow's {dtype} proposals", value,
             "ESS", f"flows.proposal.proposal_flow; 8192 draws, seed 123 (own dtype); ± {error:.3f}")


ROWS = {name.removeprefix("row_"): fn for name, fn in globals().items() if name.startswith("row_")}


def table(rows_path, cpu_path):
    cpu = json.loads(Path(cpu_path).read_text())
    ref = {r["key"]: r for r in cpu["rows"]}
    lines = [json.loads(line) for line in Path(rows_path).read_text().splitlines() if line.startswith("{")]
    print(f"CPU reference: {cpu['date']}, {cpu['machine']}; `{cpu['command']}`")
    print(f"| {'figure':<58} | {'GPU':>10} | {'unit':<9} | {'CPU':>10} | {'GPU/CPU':>8} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 11}|{'-' * 12}|{'-' * 10}|")
    for r in lines:
        if "error" in r:
            failed = f"{r['key']}: FAILED ({r['error']})"
            print(f"| {failed:<58} | {'':>10} | {'':<9} | {'':>10} | {'':>8} |")
            continue
        c = ref.get(r["key"]) or ref.get(r["key"].replace(".fused.", ".eager.").replace(".compiled", ".eager")
                                         .replace(".tf32", ".fp32").replace(".bf16", ".fp32"))
        ratio = ""
        if c is not None and r["unit"] not in ("ESS", "s", "abs diff") and c["value"] > 0:
            speed = c["value"] / r["value"] if r["unit"] == "us/link" else r["value"] / c["value"]
            ratio = f"{speed:.3g}x"
        cpu_v = f"{c['value']:.4g}" if c is not None else "-"
        print(f"| {r['what']:<58} | {r['value']:>10.4g} | {r['unit']:<9} | {cpu_v:>10} | {ratio:>8} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("row", choices=[*ROWS, "table"])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scale", choices=["gpu", "cpu"], default=None)
    args = ap.parse_args()
    if args.row == "table":
        return table(*args.paths)
    device = torch.device(args.device)
    ROWS[args.row](device, args.scale or ("gpu" if device.type == "cuda" else "cpu"))


if __name__ == "__main__":
    main()
