"""The flow kernel's random stream does not depend on ``rows`` (every flow family), and every flow's
forward map is bit-identical per sample across batch sizes on the CPU (the spline derivatives use
``flows.transforms.softplus``, built from exp and log, because torch's ``F.softplus`` rounds the SIMD
remainder of its loop differently), so ensembles for rows = 1, 2, 8 and for a timed choice of rows agree
bit for bit for φ⁴, U(1) (with and without sweep) and SU(N)."""

import pytest
import torch

from flows.model import build_flow
from flows.sun.flow import build_sun_flow
from flows.u1.flow import build_u1_flow
from lattice.scalar import Phi4
from lattice.u1 import U1
from lattice.wilson import SUN
from mcmc.kernels.independence import IndependenceMetropolis

N_CHAINS = 3


def _perturbed(flow, seed):
    """The flow with every parameter moved by N(0, 0.1²) noise, so that no coupling is the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def _phi4():
    theory = Phi4((4, 4), -4.0, 8.0)
    return theory, build_flow(theory, {"n_layers": 2, "hidden": [4]}, dtype=torch.float64)


def _u1(sweep):
    theory = U1((4, 4), 2.0)
    cfg = {"n_layers": 2, "hidden": [4], "sweep": sweep}
    return theory, build_u1_flow(theory, cfg, dtype=torch.float64)


def _sun():
    theory = SUN((4, 4), 2.0, 2)
    return theory, build_sun_flow(theory, {"n_layers": 2, "hidden": [4]}, dtype=torch.float64)


FLOWS = {"phi4": _phi4, "u1": lambda: _u1(False), "u1_sweep": lambda: _u1(True), "sun": _sun}


@pytest.fixture(params=sorted(FLOWS), scope="module")
def model(request):
    theory, flow = FLOWS[request.param]()
    return request.param, theory, _perturbed(flow, 7)


def test_sample_is_push_of_draw_prior(model):
    """``sample(n, g)`` is exactly ``push(draw_prior(n, g))``: one stream, one forward map."""
    _, _, flow = model
    x1, logq1 = flow.sample(5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        x2, logq2 = flow.push(flow.draw_prior(5, torch.Generator().manual_seed(1)))
    assert torch.equal(x1, x2) and torch.equal(logq1, logq2)


def test_forward_map_is_bit_identical_across_batch_sizes(model):
    """Each sample's x and log q do not depend on the batch it is pushed in, nor on its place in it."""
    _, _, flow = model
    z = flow.draw_prior(16, torch.Generator().manual_seed(2))
    with torch.no_grad():
        x_all, logq_all = flow.push(z)
        for size in (1, 2, 5):
            for start in range(0, 16, size):
                x, logq = flow.push(z[start:start + size])
                assert torch.equal(x, x_all[start:start + size])
                assert torch.equal(logq, logq_all[start:start + size])


def _run(kernel, n_steps, seed):
    g = torch.Generator().manual_seed(seed)
    state = kernel.init_from_flow(N_CHAINS, g)
    xs, logqs, accepted = [], [], []
    for _ in range(n_steps):
        state, info = kernel.step(state, g)
        xs.append(state.x.clone())
        logqs.append(state.logq.clone())
        accepted.append(info.accepted.clone())
    return torch.stack(xs), torch.stack(logqs), torch.stack(accepted), state


class Recorder:
    """A flow that records the prior draws it pushes."""

    def __init__(self, flow):
        self.flow, self.pushed = flow, []
        self.dtype, self.device = flow.dtype, flow.device

    def draw_prior(self, n, generator):
        return self.flow.draw_prior(n, generator)

    def push(self, z):
        self.pushed.append(z.clone())
        return self.flow.push(z)

    def sample(self, n, generator):
        return self.flow.sample(n, generator)

    def log_prob(self, x):
        return self.flow.log_prob(x)


def test_random_stream_does_not_depend_on_rows(model):
    """The prior draws pushed and the log-uniforms drawn are the same sequence for rows = 1, 3, 8."""
    _, theory, flow = model
    streams = []
    for rows in (1, 3, 8):
        rec = Recorder(flow)
        kernel = IndependenceMetropolis(theory, rec, batch=rows)
        g = torch.Generator().manual_seed(4)
        state, logu = kernel.init_from_flow(N_CHAINS, g), []
        for _ in range(24 // rows):
            state = kernel.refill(state, g)
            logu.append(state.buffer_logu)
        streams.append((torch.cat(rec.pushed), torch.cat(logu)))
    for z, logu in streams[1:]:
        assert torch.equal(z, streams[0][0]) and torch.equal(logu, streams[0][1])


def test_ensembles_agree_for_every_rows(model):
    """rows = 1, 2, 8 (``batch``), and a time budget that picks its own rows, give the same ensemble:
    bit for bit."""
    _, theory, flow = model
    runs = {b: _run(IndependenceMetropolis(theory, flow, batch=b), 19, seed=5) for b in (1, 2, 8)}
    timed = IndependenceMetropolis(theory, flow, batch=8, refill_seconds=1e-9)  # rows = 1 after timing
    runs["timed"] = _run(timed, 19, seed=5)
    assert runs["timed"][3].rows == 1 and runs[8][3].rows == 8
    ref = runs[1]
    assert 0 < ref[2].float().mean() < 1  # a real mix of accepts and rejects
    for key, run in runs.items():
        assert torch.equal(run[2], ref[2]), key
        for a, b in zip(run[:2], ref[:2], strict=True):
            assert torch.equal(a, b), key
