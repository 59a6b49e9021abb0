"""The sticky-chain check: rejection runs, blocking errors, and when the Gamma window is flagged."""

import numpy as np

from observables.sticky import BLOCK_FACTOR, blocked_error, check_sticky, longest_rejection_run


def test_longest_rejection_run():
    acc = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [1, 0]], dtype=bool)
    assert longest_rejection_run(acc) == 3  # chain 1: rows 0-2
    assert longest_rejection_run(np.ones((4, 2), bool)) == 0
    assert longest_rejection_run(np.zeros(7, bool)) == 7


def test_blocked_error_of_independent_data_is_the_standard_error():
    rng = np.random.default_rng(0)
    reps = [rng.normal(size=40000) for _ in range(2)]
    err, n_blocks = blocked_error(reps, 100)
    assert n_blocks == 800 and abs(err / (1 / np.sqrt(80000)) - 1) < 0.1
    assert np.isnan(blocked_error([np.ones(5)], 10)[0])


def test_a_window_that_misses_a_long_plateau_is_flagged():
    """White noise plus rare long plateaus (a chain stuck at a high-weight configuration): the Gamma
    error given here (the naive one) is far below the blocking error, so the check warns."""
    rng = np.random.default_rng(1)
    n = 200000
    a = rng.normal(size=n)
    accepted = np.ones(n, bool)
    for start in rng.choice(n - 500, 40, replace=False):
        a[start : start + 400] = 4.0
        accepted[start + 1 : start + 400] = False
    naive = a.std() / np.sqrt(n)
    check = check_sticky({"O": [a]}, {"O": naive}, [accepted[:, None]])
    assert check.longest_run >= 399 and check.block == BLOCK_FACTOR * check.longest_run
    assert check.ratios["O"] > 2 and "sticky chain" in check.warning
    err_blocked, _ = blocked_error([a], check.block)
    assert check_sticky({"O": [a]}, {"O": err_blocked / 1.2}, [accepted[:, None]]).warning is None


def test_too_short_a_chain_for_blocking_is_reported():
    a = np.random.default_rng(2).normal(size=1000)
    accepted = np.ones(1000, bool)
    accepted[100:300] = False
    check = check_sticky({"O": [a]}, {"O": 0.03}, [accepted[:, None]])
    assert check.ratios == {} and "too long" in check.warning
