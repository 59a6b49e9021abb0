"""The card/``--set`` YAML dialect: YAML 1.2 floats, duplicate keys refused."""

import math

import pytest
import yaml

from mcmc.yaml_values import load, parse_value


@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 1e-3), ("5E+2", 500.0), ("-4.0", -4.0), ("0.5", 0.5), (".5", 0.5), ("1.", 1.0),
    ("-2.5e-1", -0.25), ("8", 8), ("true", True), ("[8, 8]", [8, 8]), ("cuda", "cuda"), ("1e", "1e"),
])
def test_values_keep_their_types(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_special_floats():
    assert load(".inf") == math.inf and load("-.inf") == -math.inf and math.isnan(load(".nan"))


def test_a_card_float_in_exponent_form_is_a_float():
    assert load("gradient_flow: {tol: 1e-3, t_max: 4}") == {"gradient_flow": {"tol": 1e-3, "t_max": 4}}


def test_a_duplicate_key_is_refused():
    with pytest.raises(yaml.YAMLError, match="duplicate key 'beta'"):
        load("beta: 1.0\nbeta: 2.0\n")


def test_invalid_yaml_stays_text():
    assert parse_value("[unclosed") == "[unclosed"
