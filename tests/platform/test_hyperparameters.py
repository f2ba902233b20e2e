"""Hyperparameter strings as SageMaker sends them, parsed by the schemas."""

from __future__ import annotations

import pytest

from pipealgos.platform.hyperparameters import HyperparameterError, Param, Schema
from pipealgos.platform.schemas.pca import SCHEMA as PCA

SCHEMA = Schema(
    algorithm="demo",
    params=(
        Param("k", int, required=True, low=1),
        Param("rate", float, default=0.5, low=0, high=1, high_open=True),
        Param("flag", bool, default=True),
        Param("metrics", list, default=["msd"], choices=("msd", "ssd")),
        Param("factor", int, default="auto", auto=True, low=1),
        Param("layers", list, default=None, item_kind=int, auto=True),
    ),
    ignored=frozenset({"force_dense"}),
)


@pytest.mark.parametrize("text, value", [("True", True), ("true", True), ("FALSE", False), ("false", False)])
def test_booleans_any_case(text, value):
    assert SCHEMA.parse({"k": "2", "flag": text})["flag"] is value


@pytest.mark.parametrize("text", ['["msd", "ssd"]', "msd,ssd", "msd, ssd"])
def test_lists_as_json_or_comma_separated(text):
    assert SCHEMA.parse({"k": "2", "metrics": text})["metrics"] == ["msd", "ssd"]


def test_integer_lists_and_auto():
    assert SCHEMA.parse({"k": "2", "layers": "[100, 50]"})["layers"] == [100, 50]
    assert SCHEMA.parse({"k": "2", "layers": "auto", "factor": "AUTO"})["factor"] == "auto"
    assert SCHEMA.parse({"k": "2", "factor": "4"})["factor"] == 4


def test_defaults_and_types():
    values = SCHEMA.parse({"k": "3"})
    assert values == {"k": 3, "rate": 0.5, "flag": True, "metrics": ["msd"], "factor": "auto", "layers": None}
    assert SCHEMA.parse({"k": "3.0"})["k"] == 3


def test_private_and_ignored_keys_are_accepted():
    values = SCHEMA.parse({"k": "1", "_tuning_objective_metric": "test:msd", "_kvstore": "dist_sync", "force_dense": "True"})
    assert "force_dense" not in values and "_kvstore" not in values


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "Missing required hyperparameter 'k'"),
        ({"k": "0"}, "'k' has invalid value '0': it must be an integer >= 1"),
        ({"k": "2.5"}, "'k' has invalid value '2.5'"),
        ({"k": "x"}, "'k' has invalid value 'x'"),
        ({"k": "1", "rate": "1"}, "'rate' has invalid value '1': it must be a number >= 0 and < 1"),
        ({"k": "1", "rate": "nan"}, "'rate' has invalid value 'nan'"),
        ({"k": "1", "flag": "yes"}, "'flag' has invalid value 'yes': it must be true or false"),
        ({"k": "1", "metrics": '["mse"]'}, "'metrics' has invalid value"),
        ({"k": "1", "factor": "0"}, "or auto"),
        ({"k": "1", "kk": "1"}, "Unknown hyperparameter(s) for demo: 'kk'. Valid names: factor, flag, k, layers, metrics, rate."),
    ],
)
def test_errors_name_the_parameter_value_and_fix(raw, message):
    with pytest.raises(HyperparameterError) as info:
        SCHEMA.parse(raw)
    assert message in str(info.value)


def test_pca_schema_as_the_sdk_sends_it():
    values = PCA.parse({"feature_dim": "50", "num_components": "5", "mini_batch_size": "500",
                        "algorithm_mode": "randomized", "subtract_mean": "True", "extra_components": "-1",
                        "epochs": "1", "force_dense": "True"})
    assert values == {"feature_dim": 50, "num_components": 5, "mini_batch_size": 500,
                      "algorithm_mode": "randomized", "subtract_mean": True, "extra_components": -1}


@pytest.mark.parametrize("text", ["[30.5]", "[true]", "[30, abc]", "30,x"])
def test_integer_list_items_must_be_whole_numbers(text):
    with pytest.raises(HyperparameterError, match="a list of integers"):
        SCHEMA.parse({"k": "1", "layers": text})
