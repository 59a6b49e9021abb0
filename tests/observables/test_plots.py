"""The plotting functions write non-empty PNG files and leave no pyplot figures open."""

import numpy as np
import pytest

from observables import plots
from observables.gamma import gamma_analysis

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


@pytest.fixture
def chains():
    rng = np.random.default_rng(0)
    return np.cumsum(rng.standard_normal((300, 3)), axis=0) * 0.05 + rng.standard_normal((300, 3))


def test_single_panels(tmp_path, chains):
    res = gamma_analysis(chains)
    written = [
        plots.plot_history(chains, tmp_path / "h.png", name="mag2"),
        plots.plot_rho(res, tmp_path / "rho.png"),
        plots.plot_tau_int(res, tmp_path / "tau.png"),
        plots.plot_histogram([chains[:, 0], chains[:100, 1]], tmp_path / "sub" / "hist.png"),
    ]
    assert all(is_png(p) for p in written)


def test_observable_report(tmp_path, chains):
    out = plots.plot_observable_report("mag2", chains, gamma_analysis(chains), tmp_path / "report")
    assert out == tmp_path / "report" / "mag2.png" and is_png(out)
    const = np.full(50, 1.0)
    assert is_png(plots.plot_observable_report("const", const, gamma_analysis(const), tmp_path))


def test_training_and_acceptance(tmp_path):
    rng = np.random.default_rng(1)
    steps = np.arange(50)
    metrics = {
        "step": steps,
        "seconds": 0.1 * steps,
        "loss": np.exp(-steps / 20) + 0.1,
        "ess": 1 - np.exp(-steps / 20),
        "acceptance": np.full(50, np.nan),
    }
    assert is_png(plots.plot_training(metrics, tmp_path / "train.png"))
    accepted = rng.random((400, 5)) < 0.6
    assert is_png(plots.plot_accept_history(accepted, tmp_path / "acc.png", window=50))
    assert is_png(plots.plot_accept_history(accepted[:, 0], tmp_path / "acc1.png"))


def test_no_pyplot_state(tmp_path, chains):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_history(chains, tmp_path / "h.png")
    assert plt.get_fignums() == before
