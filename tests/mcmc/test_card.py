"""Validation at the edge: every card value is checked before any work, with one line naming the key."""

import math

import pytest
import yaml

from mcmc.card import CardError, load_card, parse_card

PHI4 = {"theory": {"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "theory, key",
    [
        ({"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}, "m2"),
        ({"name": "phi4", "shape": [4, 4], "m2": -1.0, "lam": 1.0}, "lam"),
        ({"name": "u1", "shape": [4, 4], "beta": 1.0}, "beta"),
        ({"name": "sun", "shape": [4, 4], "beta": 1.0, "N": 2}, "beta"),
    ],
)
def test_non_finite_couplings_are_refused(theory, key, value):
    """Problem 8: NaN and ±Inf used to sample (and print a plausible table) or crash afterwards."""
    with pytest.raises(CardError, match=f"'theory.{key}': Input should be a finite number"):
        parse_card({"theory": {**theory, key: value}})


@pytest.mark.parametrize(
    "section, key", [("hmc", "tau"), ("train", "lr"), ("train", "max_seconds"), ("local", "step_size")]
)
def test_every_float_section_is_finite(section, key):
    with pytest.raises(CardError, match=f"'{section}.{key}'"):
        parse_card({**PHI4, section: {key: math.nan}})


def test_nan_through_set_is_refused():
    with pytest.raises(CardError, match="finite"):
        parse_card(PHI4, ["theory.m2=.nan"])


@pytest.mark.parametrize("shape", [[1, 4], [4, 1], [1], [0, 4]])
def test_extents_are_at_least_two(shape):
    with pytest.raises(CardError, match="extents must be at least 2"):
        parse_card({"theory": {**PHI4["theory"], "shape": shape}})


def test_yaml_errors_carry_the_line(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text("theory:\n  name: phi4\n  shape: [4, 4\n  m2: 1.0\n")
    with pytest.raises(CardError, match=r"card.yaml: not valid YAML \(line 4, column \d+: "):
        load_card(path)


def test_duplicate_keys_are_an_error(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text("theory:\n  name: phi4\n  shape: [4, 4]\n  m2: -1.0\n  lam: 1.0\n  m2: -4.0\n")
    with pytest.raises(CardError, match=r"line 6, column 3: duplicate key 'm2' \(first on line 4\)"):
        load_card(path)
    path.write_text(yaml.safe_dump(PHI4) + "seed: 1\nseed: 2\n")
    with pytest.raises(CardError, match="duplicate key 'seed'"):
        load_card(path)


@pytest.mark.parametrize("data", [bytes(range(256)), b"\x89HDF\r\n\x1a\n" + b"\0" * 64, b"\xff\xfe\xfa"])
def test_a_binary_file_is_not_a_card(tmp_path, data):
    path = tmp_path / "card.yaml"
    path.write_bytes(data)
    with pytest.raises(CardError, match="not a text file"):
        load_card(path)


def test_a_key_added_later_at_its_old_value_leaves_the_physics_hash_as_it_was():
    """``hmc.compile`` came after HMC ensembles existed: off, the hash is the one computed without the
    key (so those ensembles resume); on, the hash changes. The cluster keys of ``local`` likewise."""
    import hashlib
    import json

    card = parse_card({**PHI4, "sampler": {"kind": "hmc"}})
    dump = card.model_dump(mode="json")
    old = {k: dump[k] for k in ("theory", "sampler", "hmc", "seed", "dtype")}
    del old["hmc"]["compile"]
    before = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert card.physics_hash() == before
    compiled = parse_card({**PHI4, "sampler": {"kind": "hmc"}, "hmc": {"compile": True}})
    assert compiled.physics_hash() != before
    plain = parse_card({**PHI4, "sampler": {"kind": "local"}})
    four = parse_card({**PHI4, "sampler": {"kind": "local"}, "local": {"n_clusters": 4}})
    wolff = parse_card({**PHI4, "sampler": {"kind": "local"}, "local": {"cluster": "wolff"}})
    assert plain.physics_hash() == four.physics_hash() != wolff.physics_hash()
