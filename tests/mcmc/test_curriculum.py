"""Curriculum training (``train.stages``, ``mcmc.curriculum``): stages run in order on their own
theories, weights carry over, and the run's training cost is the sum over stages."""

import pytest
import torch

from flows.checkpoint import load_checkpoint
from mcmc.card import CardError, parse_card, stage_cards
from mcmc.setup import build_theory, flow_config, flow_spec
from mcmc.training import trained_flow

FLOW = {"coupling": "affine", "n_layers": 2, "hidden": [4], "fourier": False}


def _card(tmp_path, stages, steps=0):
    return parse_card({
        "theory": {"name": "phi4", "shape": [8, 8], "m2": -4.0, "lam": 8.0},
        "sampler": {"kind": "flow"}, "flow": FLOW,
        "train": {"steps": steps, "batch_size": 16, "eval_every": 5, "eval_batch": 32, "stages": stages},
        "seed": 4, "out": str(tmp_path / "run"),
    })


def test_stages_carry_weights_and_sum_their_cost(tmp_path):
    card = _card(tmp_path, [{"shape": [4, 4], "steps": 10, "lam": 6.0}, {"shape": [6, 6], "steps": 0}])
    stages = stage_cards(card)
    assert [s.theory.shape for s in stages] == [(4, 4), (6, 6)] and stages[0].theory.lam == 6.0
    assert stages[1].train.stages is None and stages[0].train.steps == 10 and stages[0].train.batch_size == 16
    trained = trained_flow(flow_spec(card), build_theory(card), torch.device("cpu"), progress=False)
    first = load_checkpoint(tmp_path / "run" / "run.stage0.flow.pt", build_theory(stages[0]))
    assert first["step"] == 10
    for name, tensor in trained.flow.state_dict().items():  # stage 1 and the card train 0 steps
        assert torch.equal(tensor, first["model"][name]), name
    total = sum(load_checkpoint(tmp_path / "run" / f"run{s}.flow.pt", theory)["seconds"]
                for s, theory in ((".stage0", build_theory(stages[0])), (".stage1", build_theory(stages[1])),
                                  ("", build_theory(card))))
    assert trained.seconds == pytest.approx(total, rel=1e-9) and trained.seconds > first["seconds"]
    again = trained_flow(flow_spec(card), build_theory(card), torch.device("cpu"), progress=False)  # loaded
    assert again.seconds == pytest.approx(total, rel=1e-9)
    assert flow_config(card).to_dict() == first["flow_config"]
    assert len(first["best"]["history"]["khat"]) == len(first["best"]["history"]["ess"]) == 3  # 0, 5, 10


def test_unknown_stage_key_is_refused(tmp_path):
    with pytest.raises(CardError, match=r"train.stages\[0\].colour"):
        stage_cards(_card(tmp_path, [{"colour": 3}]))
    with pytest.raises(CardError, match=r"train.stages\[0\]"):
        stage_cards(_card(tmp_path, [{"lam": -1.0}]))


def test_the_fourier_layer_is_carried_to_a_larger_lattice_by_momentum():
    """A stage's ``FourierScaling`` (one ρ per momentum) reaches the next lattice size interpolated in
    p = 2πk/L: at the momenta both lattices share it is copied exactly, ρ_k = ρ_{−k} stays symmetric,
    the convolutions carry over as before, and nothing is left at its fresh value."""
    from flows.model import build_flow
    from lattice.scalar import Phi4
    from mcmc.curriculum import carry_weights

    config = {**FLOW, "fourier": True}
    small = build_flow(Phi4((4, 6), m2=-4.0, lam=8.0), config, generator=torch.Generator().manual_seed(1))
    big = build_flow(Phi4((8, 12), m2=-4.0, lam=8.0), config, generator=torch.Generator().manual_seed(2))
    fourier = next(m for m in small.modules() if hasattr(m, "resize_parameter"))
    k0, k1 = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    rho = torch.cos(2 * torch.pi * k0 / 4) + 0.5 * torch.cos(2 * torch.pi * k1 / 6)  # even in k
    with torch.no_grad():
        fourier.log_scale.copy_(rho)
    assert carry_weights(small, big) == []
    carried = next(m for m in big.modules() if hasattr(m, "resize_parameter")).log_scale.detach()
    assert carried.shape == (8, 12)
    torch.testing.assert_close(carried[::2, ::2], rho)
    flipped = torch.roll(torch.flip(carried, (0, 1)), shifts=(1, 1), dims=(0, 1))
    torch.testing.assert_close(carried, flipped)
    for name, tensor in small.state_dict().items():
        if "log_scale" not in name:
            assert torch.equal(tensor, big.state_dict()[name]), name
    with pytest.raises(ValueError, match="cannot resize"):
        fourier.resize_parameter("log_scale", torch.zeros(3))
