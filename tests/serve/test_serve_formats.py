"""Request decoding and response encoding, checked against independent readers and writers
(the SageMaker SDK's RecordIO writer/reader, the upb protobuf runtime, json)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from mlroot import recordio_bytes
from sagemaker.amazon.common import read_records, write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from pipealgos.serve import formats
from pipealgos.serve.formats import BadRequest, NotAcceptable, UnsupportedMediaType

ROWS = np.array([[1.5, 0.0, -2.0], [0.0, 0.0, 4.25]], dtype=np.float32)


def dense(features) -> np.ndarray:
    return features.toarray() if sp.issparse(features) else np.asarray(features)


# --- request forms ----------------------------------------------------------------------------

JSON_FORMS = {
    "features": {"instances": [{"features": row} for row in ROWS.tolist()]},
    "data.features.values": {"instances": [{"data": {"features": {"values": row}}} for row in ROWS.tolist()]},
    "sparse keys/shape/values": {"instances": [
        {"data": {"features": {"keys": [0, 2], "shape": [3], "values": [1.5, -2.0]}}},
        {"data": {"features": {"keys": [2], "shape": [3], "values": [4.25]}}, "configuration": {}},
    ]},
    "mixed dense and sparse": {"instances": [
        {"features": ROWS[0].tolist()},
        {"data": {"features": {"keys": [2], "shape": [3], "values": [4.25]}}},
    ]},
    "bare rows (SDK JSONSerializer of an array)": ROWS.tolist(),
}


@pytest.mark.parametrize("form", JSON_FORMS)
def test_every_json_request_form_gives_the_same_rows(form):
    body = json.dumps(JSON_FORMS[form]).encode()
    features = formats.decode_request(body, "application/json", feature_dim=3)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(dense(features), ROWS)


def test_sparse_json_stays_sparse():
    body = json.dumps(JSON_FORMS["sparse keys/shape/values"]).encode()
    assert sp.issparse(formats.decode_request(body, "application/json", feature_dim=3))


def test_single_row_and_single_instance_are_one_record():
    for document in (ROWS[0].tolist(), {"features": ROWS[0].tolist()}):
        features = formats.decode_request(json.dumps(document).encode(), "application/json", feature_dim=3)
        np.testing.assert_array_equal(dense(features), ROWS[:1])


def test_jsonlines_one_instance_per_line_blank_lines_skipped():
    body = (json.dumps({"features": ROWS[0].tolist()}) + "\n\n" +
            json.dumps({"data": {"features": {"keys": [2], "shape": [3], "values": [4.25]}}}) + "\n").encode()
    np.testing.assert_array_equal(dense(formats.decode_request(body, "application/jsonlines", 3)), ROWS)


def test_csv_rows_parameters_and_case_ignored():
    body = b"1.5,0,-2\n0,0,4.25\n"
    features = formats.decode_request(body, "Text/CSV; charset=utf-8; label_size=1", feature_dim=3)
    np.testing.assert_array_equal(features, ROWS)


@pytest.mark.parametrize("writer", [write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor])
def test_recordio_from_the_sdk_writers(writer):
    out = io.BytesIO()
    writer(out, ROWS if writer is write_numpy_to_dense_tensor else sp.csr_matrix(ROWS))
    features = formats.decode_request(out.getvalue(), "application/x-recordio-protobuf", feature_dim=3)
    np.testing.assert_array_equal(dense(features), ROWS)


def test_recordio_labels_are_ignored():
    body = recordio_bytes(ROWS, np.array([1.0, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(formats.decode_request(body, "application/x-recordio-protobuf", 3), ROWS)


def test_feature_dim_unknown_takes_the_first_record():
    body = json.dumps({"instances": [{"features": [1, 2]}, {"features": [3, 4]}]}).encode()
    assert formats.decode_request(body, "application/json", feature_dim=None).shape == (2, 2)


# --- request errors ---------------------------------------------------------------------------

BAD_REQUESTS = [
    ("application/json", b'{"instances": [{"features": [1, 2, 3]}', "not valid JSON"),
    ("application/json", b'{"instances": [{"features": [1, 2, 3]}, {"features": [1, 2]}]}',
     "record 1 'features' has 2 features, but the model takes 3"),
    ("application/json", b'{"instances": [{"features": [1, 2, 3]}, {"features": [1, "x", 3]}]}',
     "record 1 'features' values must be a flat list of numbers"),
    ("application/json", b'{"instances": [{"features": [1, 2, 3]}, {"features": [1, NaN, 3]}]}',
     "record 1 'features' values contain NaN or infinity"),
    ("application/json", b'{"instances": [{"feature": [1, 2, 3]}]}', 'record 0 must be {"features"'),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0, 5], "shape": [3], "values": [1, 2]}}}]}',
     "record 0 data.features: key 5 is outside the shape [3]"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "values": [1]}}}]}',
     "need 'shape'"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0, 1], "shape": [3], "values": [1]}}}]}',
     "2 keys but 1 values"),
    ("application/json", b'{"instances": {"features": [1, 2, 3]}}', "'instances' must be a list"),
    ("application/json", b'"text"', 'must be {"instances"'),
    ("application/json", b'{"instances": []}', "holds no records"),
    ("application/jsonlines", b'{"features": [1, 2, 3]}\n{"features": [1, 2, 3]\n', "line 2 of the application/jsonlines"),
    ("text/csv", b"1,2,3\n1,2\n", "line 2: 2 columns"),
    ("text/csv", b"1,2\n3,4\n", "2 feature columns, expected feature_dim 3"),
    ("text/csv", b"1,a,3\n", "non-numeric field 'a'"),
    ("application/x-recordio-protobuf", b"not recordio at all!", "not a RecordIO frame"),
    ("application/x-recordio-protobuf", recordio_bytes(ROWS)[:-5], "truncated"),
    ("application/x-recordio-protobuf", recordio_bytes(np.ones((3, 2), np.float32)), "expected feature_dim 3"),
    ("application/json", b"   ", "empty"),
    # values beyond float32's range are infinite after the cast (issue 12, item 1)
    ("application/json", b'{"instances": [{"features": [1, 2, 3]}, {"features": [1, 1e40, 3]}]}',
     "record 1 'features' values contain NaN or infinity (values are read as float32"),
    ("application/json", b'[[1, 2, 3], [-1e39, 2, 3]]', "record 1 values contain NaN or infinity"),
    ("application/json", b'{"instances": [{"features": [1, 2, 3]}, {"features": [1, 1e40, "x"]}]}',
     "record 1 'features' values must be a flat list of numbers"),
    ("application/json", b'[[1, 2, 3], [1, 2, ' + str(10**400).encode() + b']]', "record 1 values contain NaN or infinity"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [1], "shape": [3], "values": [1e40]}}}]}',
     "record 0 data.features values contain NaN or infinity"),
    ("application/jsonlines", b'{"features": [1, 2, 3]}\n{"features": [3.5e38, 2, 3]}\n',
     "record 1 'features' values contain NaN or infinity"),
    # sparse shapes and keys range-checked in exact integers (issue 12, item 13)
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "shape": [1180591620717411303424], '
     b'"values": [1]}}}]}', "record 0 data.features: shape [1180591620717411303424] is out of range"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "shape": [4294967296, 4294967296], '
     b'"values": [1]}}}]}', "shape [4294967296, 4294967296] is out of range"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "shape": [4611686018427387904, 3], '
     b'"values": [1]}}}]}', "is out of range"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "shape": [0], "values": [1]}}}]}',
     "shape [0] is out of range"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "shape": [-3], "values": [1]}}}]}',
     "shape [-3] is out of range"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [0], "shape": [3.5], "values": [1]}}}]}',
     "shape must be whole numbers"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [-1], "shape": [3], "values": [1]}}}]}',
     "key -1 is outside the shape [3]"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [9223372036854775808], "shape": [3], '
     b'"values": [1]}}}]}', "key 9223372036854775808 is outside the shape [3]"),
    ("application/json", b'{"instances": [{"data": {"features": {"keys": [1e300], "shape": [3], "values": [1]}}}]}',
     "is outside the shape [3]"),
    ("application/json", b'{"instances": [{"features": [1, 2, 3], "data": 1}, {"data": {"features": {"keys": [0], '
     b'"shape": [2, 2], "values": [1]}}}]}', "record 1 data.features has 4 features, but the model takes 3"),
    # deep nesting is a 400, not a RecursionError (issue 12, item 14)
    ("application/json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("application/json", b'{"instances": ' + b"[" * 100_000, "nested too deeply"),
    ("application/jsonlines", b'{"features": [1, 2, 3]}\n' + b"[" * 100_000 + b"\n", "line 2 of the application/jsonlines"),
    ("application/json", b'{"instances": [{"features": ' + b"[" * 900 + b"]" * 900 + b"}]}",
     "record 0 'features' values must be a flat list of numbers"),
]


@pytest.mark.parametrize("content_type,body,message", BAD_REQUESTS)
def test_bad_bodies_are_400_naming_the_problem(content_type, body, message):
    with pytest.raises(BadRequest) as caught:
        formats.decode_request(body, content_type, feature_dim=3)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_recordio_error_names_the_record():
    body = recordio_bytes(ROWS) + recordio_bytes(np.ones((1, 2), np.float32))
    with pytest.raises(BadRequest, match="record 2.*2 features, expected feature_dim 3"):
        formats.decode_request(body, "application/x-recordio-protobuf", feature_dim=3)


@pytest.mark.parametrize("content_type", [None, "", "application/x-npy", "image/jpeg"])
def test_unsupported_content_type_is_415(content_type):
    with pytest.raises(UnsupportedMediaType) as caught:
        formats.decode_request(b"[1, 2, 3]", content_type, feature_dim=3)
    assert caught.value.status == 415
    assert "application/json" in caught.value.message


# --- content negotiation ----------------------------------------------------------------------

@pytest.mark.parametrize("header,chosen", [
    (None, "application/json"),
    ("", "application/json"),
    ("*/*", "application/json"),
    ("application/JSONLines", "application/jsonlines"),
    ("application/x-recordio-protobuf; charset=binary", "application/x-recordio-protobuf"),
    ("image/png, text/csv", "text/csv"),
    ("application/json;q=0.5, application/jsonlines", "application/jsonlines"),
    ("application/jsonlines;q=0, */*", "application/json"),
    ("text/*", "text/csv"),
    ("application/*", "application/json"),
])
def test_accept_negotiation(header, chosen):
    assert formats.choose_response_type(accept(header), "application/json") == chosen


def accept(header: str | None) -> MIMEAccept:
    """The header parsed as Flask parses ``request.accept_mimetypes``."""
    return parse_accept_header(header, MIMEAccept)


def test_wildcard_accept_uses_the_configured_default():
    assert formats.choose_response_type(accept("*/*"), "application/jsonlines") == "application/jsonlines"
    assert formats.choose_response_type(accept("application/*"), "application/jsonlines") == "application/jsonlines"
    assert formats.choose_response_type(accept(None), "text/csv") == "text/csv"


@pytest.mark.parametrize("header", ["image/png", "application/xml, text/html", "application/json;q=0"])
def test_unsupported_accept_is_406(header):
    with pytest.raises(NotAcceptable) as caught:
        formats.choose_response_type(accept(header), "application/json")
    assert caught.value.status == 406 and "application/jsonlines" in caught.value.message


@pytest.mark.parametrize("header,kind", [(None, ""), ("  ", ""), ("Text/CSV; label_size=1", "text/csv"),
                                         ("protobuf", "application/x-recordio-protobuf")])
def test_media_type_is_the_io_layers_parse(header, kind):
    assert formats.media_type(header) == kind


# --- responses --------------------------------------------------------------------------------

OUTPUTS = {"closest_cluster": np.array([1.0, 0.0], np.float32),
           "distance_to_cluster": np.array([0.25, 3.5], np.float32),
           "projection": np.array([[1.0, -2.5, 1 / 3], [0.0, 7.0, -1e-8]], np.float32)}
KEYS = ("closest_cluster", "distance_to_cluster", "projection")


def test_json_response_shape():
    body = json.loads(formats.encode_response(OUTPUTS, KEYS, "predictions", "application/json"))
    assert list(body) == ["predictions"] and len(body["predictions"]) == 2
    first = body["predictions"][0]
    assert list(first) == list(KEYS)
    assert first["closest_cluster"] == 1.0 and isinstance(first["closest_cluster"], float)
    assert np.float32(first["projection"][2]) == np.float32(1 / 3)  # lossless for float32


def test_jsonlines_response_one_object_per_line():
    lines = formats.encode_response(OUTPUTS, KEYS, "predictions", "application/jsonlines").decode().splitlines()
    assert [json.loads(line)["distance_to_cluster"] for line in lines] == [0.25, 3.5]


def test_csv_response_concatenates_outputs_in_order():
    text = formats.encode_response(OUTPUTS, KEYS, "predictions", "text/csv").decode()
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    expected = np.hstack([OUTPUTS[k].reshape(2, -1) for k in KEYS])
    np.testing.assert_array_equal(table.astype(np.float32), expected)


def test_recordio_response_read_by_the_sdk():
    body = formats.encode_response(OUTPUTS, KEYS, "predictions", "application/x-recordio-protobuf")
    records = read_records(io.BytesIO(body))
    assert len(records) == 2
    for i, record in enumerate(records):
        assert len(record.features) == 0
        assert set(record.label) == set(KEYS)
        for key in KEYS:
            np.testing.assert_array_equal(np.float32(record.label[key].float32_tensor.values),
                                          OUTPUTS[key][i].reshape(-1))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), widths=st.lists(st.integers(0, 40), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_recordio_response_matches_upb_for_any_shapes(n, widths, seed):
    """The template encoder equals records built one by one with the protobuf runtime."""
    rng = np.random.default_rng(seed)
    keys = [f"out{i}" * (i + 1) for i in range(len(widths))]
    outputs = {k: (rng.normal(size=n) if w == 0 else rng.normal(size=(n, w))).astype(np.float32)
               for k, w in zip(keys, widths)}
    body = formats.encode_response(outputs, keys, "predictions", "application/x-recordio-protobuf")
    records = read_records(io.BytesIO(body))
    assert len(records) == n
    for i, record in enumerate(records):
        for key in keys:
            np.testing.assert_array_equal(np.float32(record.label[key].float32_tensor.values),
                                          outputs[key][i].reshape(-1))


def test_json_and_csv_numbers_read_back_as_the_same_float32():
    """Every finite float32 bit pattern class (normal, subnormal, extremes) survives JSON and CSV."""
    bits = np.random.default_rng(5).integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = np.concatenate([values[np.isfinite(values)], np.float32([0.1, -0.0, 1e-45, 3.4028235e38])])
    outputs = {"score": values}
    from_json = [r["score"] for r in json.loads(formats.encode_response(outputs, ["score"], "predictions",
                                                                       "application/json"))["predictions"]]
    np.testing.assert_array_equal(np.array(from_json).astype(np.float32).view(np.uint32), values.view(np.uint32))
    from_csv = np.loadtxt(io.StringIO(formats.encode_response(outputs, ["score"], "p", "text/csv").decode()))
    np.testing.assert_array_equal(from_csv.astype(np.float32).view(np.uint32), values.view(np.uint32))
    assert '"score": 0.1}' in formats.encode_response(
        {"score": np.float32([0.1])}, ["score"], "predictions", "application/json").decode()


def test_non_finite_outputs_are_json_nan_and_infinity_like_json_dumps():
    outputs = {"score": np.float32([np.nan, np.inf, -np.inf, 2.5])}
    text = formats.encode_response(outputs, ["score"], "scores", "application/json").decode()
    assert text == '{"scores": [{"score": NaN}, {"score": Infinity}, {"score": -Infinity}, {"score": 2.5}]}'
    assert json.loads(text)["scores"][3] == {"score": 2.5}


def test_integer_outputs_print_as_integers_and_travel_as_float32_tensors():
    outputs = {"score": np.float32([0.25, 0.75]), "predicted_label": np.array([0, 1], dtype=np.int64)}
    keys = ["score", "predicted_label"]
    assert json.loads(formats.encode_response(outputs, keys, "predictions", "application/json")) == {
        "predictions": [{"score": 0.25, "predicted_label": 0}, {"score": 0.75, "predicted_label": 1}]}
    assert formats.encode_response(outputs, keys, "predictions", "text/csv") == b"0.25,0\n0.75,1\n"
    records = read_records(io.BytesIO(formats.encode_response(outputs, keys, "predictions",
                                                              "application/x-recordio-protobuf")))
    assert [list(r.label["predicted_label"].float32_tensor.values) for r in records] == [[0.0], [1.0]]
