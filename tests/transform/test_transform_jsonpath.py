"""SageMaker's JSONPath subset for InputFilter / OutputFilter."""

from __future__ import annotations

import pytest

from pipealgos.platform.transform.jsonpath import JsonPath, JsonPathError

RECORD = {"id": 7, "features": [1.5, 2.5, 3.5], "nested": {"a": [{"b": 1}, {"b": 2}]}, "SageMakerOutput": {"s": 0.3}}


@pytest.mark.parametrize("expression, value, expected", [
    ("$", [1, 2, 3], [1, 2, 3]),
    ("$[1:]", ["id", "1", "2"], ["1", "2"]),
    ("$[:2]", [1, 2, 3], [1, 2]),
    ("$[0,-1]", [1, 2, 3], [1, 3]),
    ("$[0,5:]", list(range(8)), [0, 5, 6, 7]),
    ("$[2]", [1, 2, 3], 3),
    ("$.features", RECORD, [1.5, 2.5, 3.5]),
    ("$['features']", RECORD, [1.5, 2.5, 3.5]),
    ("$.features[0]", RECORD, 1.5),
    ("$['id','SageMakerOutput']", RECORD, {"id": 7, "SageMakerOutput": {"s": 0.3}}),
    ("$.nested.a[*].b", RECORD, [1, 2]),
    ("$.SageMakerOutput.s", RECORD, 0.3),
    ("$.*", {"a": 1, "b": 2}, [1, 2]),
])
def test_selects_as_sagemaker_documents(expression, value, expected):
    assert JsonPath(expression).apply(value) == expected


def test_the_root_alone_is_the_identity():
    assert JsonPath("$").is_identity and not JsonPath("$[1:]").is_identity


@pytest.mark.parametrize("expression, fragment", [
    ("features", r"must start with '\$'"),
    ("$..features", "cannot read"),
    ("$[?(@.a)]", "is not a name list"),
    ("$['a',1]", "mixes names and indices"),
])
def test_outside_the_subset_is_refused_naming_the_expression(expression, fragment):
    with pytest.raises(JsonPathError, match=fragment) as info:
        JsonPath(expression)
    assert expression in str(info.value)


@pytest.mark.parametrize("expression, value, fragment", [
    ("$[5]", [1, 2, 3], "index 5 is outside the record's 3 elements"),
    ("$.missing", RECORD, "no key 'missing'"),
    ("$.id", [1, 2], "a name applied to a list"),
    ("$[0]", {"a": 1}, "an index applied to an object"),
])
def test_a_path_that_does_not_fit_the_record_is_an_error(expression, value, fragment):
    with pytest.raises(JsonPathError, match=fragment):
        JsonPath(expression).apply(value)
