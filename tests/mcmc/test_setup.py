"""The edge (``mcmc.setup``): a validated card becomes a frozen ``JobPlan`` of plain values, without
touching any file; the sampler kind picks its spec there and nowhere else, and every check that needs
the theory or the machine runs there."""

import dataclasses
from pathlib import Path

import pytest
import torch

from mcmc.card import Card, CardError, load_card, parse_card
from mcmc.plan import HMCSpec, JobPlan, LocalSpec
from mcmc.resume import chain_settings
from mcmc.runtime import BuildContext
from mcmc.setup import SPECS, job_plan, sampler_spec
from mcmc.training import FlowSpec

RUNS = sorted((Path(__file__).resolve().parents[2] / "runs").glob("*.yaml"))
PHI4 = {"theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}}
SPEC_CLASSES = {"hmc": HMCSpec, "local": LocalSpec, "flow": FlowSpec}


def _files(root):
    return sorted(p for p in root.rglob("*"))


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_every_example_card_plans_without_touching_files(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a card's relative ``out`` would land here
    card = load_card(path, [f"out={tmp_path / 'out'}"])
    plan = job_plan(card)
    assert _files(tmp_path) == []
    assert isinstance(plan, JobPlan) and not isinstance(plan.provenance.tree, Card)
    assert isinstance(plan.sampler, SPEC_CLASSES[card.sampler.kind])
    assert plan.sampler.kind == card.sampler.kind
    assert plan.sampling.n_configs == card.sample.n_configs and plan.sampling.n_chains == card.sample.n_chains
    assert plan.theory.params() == {**card.theory.model_dump(), "shape": list(card.theory.shape)}
    assert plan.provenance.physics_hash == card.physics_hash() and plan.provenance.card_yaml == card.to_yaml()
    assert plan.memory.bytes > 0 and card.theory.name in plan.memory.what
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.sampling.n_configs = 1


def test_the_spec_table_is_the_card_kinds():
    assert set(SPECS) == set(SPEC_CLASSES) == set(Card.model_fields["sampler"].annotation.model_fields["kind"]
                                                   .annotation.__args__)


def test_hmc_spec_carries_the_card_and_builds_its_kernel():
    card = parse_card({**PHI4, "hmc": {"tau": 0.5, "n_steps": 7, "integrator": "leapfrog"}})
    spec = sampler_spec(card)
    assert spec == HMCSpec(0.5, 7, "leapfrog", False)
    kernel = spec.build(job_plan(card).theory, BuildContext(torch.device("cpu"), torch.float64)).kernel
    assert (kernel.tau, kernel.n_steps) == (0.5, 7)


def test_flow_spec_has_its_stages_and_the_resume_keys(tmp_path):
    card = parse_card({**PHI4, "sampler": {"kind": "flow"}, "out": str(tmp_path / "run"),
                       "train": {"steps": 3, "stages": [{"shape": [2, 2], "steps": 1}]}})
    plan = job_plan(card)
    spec = plan.sampler
    assert spec.path == tmp_path / "run" / "run.flow.pt" and spec.train_config.steps == 3
    (stage,) = spec.stages
    assert stage.theory.shape == (2, 2) and stage.spec.path == tmp_path / "run" / "run.stage0.flow.pt"
    assert stage.spec.train_config.steps == 1 and stage.spec.stages == ()
    assert "train" in plan.provenance.fixed_sections
    assert chain_settings(plan.provenance, 2) == {
        "sample.n_therm": 500, "sample.n_chains": 1, "sample.every": 1, "sample.proposal_batch": 1024,
        "n_replicas": 2,
    }
    assert not (tmp_path / "run").exists()


def test_train_plans_a_flow_whatever_the_kind():
    plan = job_plan(parse_card(PHI4), train=True)
    assert isinstance(plan.sampler, FlowSpec) and plan.memory.what.startswith("hmc,")


def test_setup_refuses_before_any_work():
    with pytest.raises(CardError, match="CPU only"):
        sampler_spec(parse_card({**PHI4, "sampler": {"kind": "local"}, "device": "cuda"}))
    u1 = {"theory": {"name": "u1", "shape": [4, 4], "beta": 1.0}, "sampler": {"kind": "flow"}}
    with pytest.raises(CardError, match="'flow.bound' is not used by"):
        job_plan(parse_card({**u1, "flow": {"bound": 3.0}}))
    job_plan(parse_card({**u1, "sampler": {"kind": "hmc"}, "flow": {"bound": 3.0}}))  # no flow: not read


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_cuda_device_is_refused_at_the_edge():
    with pytest.raises(CardError, match="device: cuda was requested but no CUDA device"):
        job_plan(parse_card({**PHI4, "device": "cuda"}))
