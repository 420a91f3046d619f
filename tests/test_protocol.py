"""The shared data model: V2 datatype names <-> numpy dtypes, tensor specs, signatures."""

from __future__ import annotations

import numpy as np
import pytest

from mlbridge.errors import BadRequest
from mlbridge.protocol import (
    NUMPY_TO_V2,
    V2_TO_NUMPY,
    ModelSignature,
    TensorSpec,
    all_finite,
    casts_finite,
    numpy_dtype,
    v2_datatype,
)

DATATYPES = [
    ("BOOL", np.bool_),
    ("UINT8", np.uint8),
    ("UINT16", np.uint16),
    ("UINT32", np.uint32),
    ("UINT64", np.uint64),
    ("INT8", np.int8),
    ("INT16", np.int16),
    ("INT32", np.int32),
    ("INT64", np.int64),
    ("FP16", np.float16),
    ("FP32", np.float32),
    ("FP64", np.float64),
]


@pytest.mark.parametrize(("name", "dtype"), DATATYPES)
def test_each_v2_datatype_maps_to_one_dtype_and_back(name: str, dtype: type) -> None:
    assert numpy_dtype(name) == np.dtype(dtype)
    assert v2_datatype(np.dtype(dtype)) == name


def test_the_maps_cover_the_same_datatypes() -> None:
    assert set(V2_TO_NUMPY) == {name for name, _ in DATATYPES}
    assert {NUMPY_TO_V2[dtype] for dtype in V2_TO_NUMPY.values()} == set(V2_TO_NUMPY)


@pytest.mark.parametrize("name", ["FLOAT", "fp32", "BYTES", None, 3])
def test_an_unknown_datatype_lists_the_known_ones(name) -> None:
    with pytest.raises(BadRequest, match=f"unknown datatype {name!r}; expected one of BOOL, "):
        numpy_dtype(name)


def test_a_dtype_without_a_v2_name_is_refused() -> None:
    with pytest.raises(BadRequest, match="numpy dtype complex64 has no V2 datatype"):
        v2_datatype(np.dtype(np.complex64))


SPEC = TensorSpec("input", "FP32", (-1, 28, 28))


@pytest.mark.parametrize(
    ("shape", "accepted"),
    [
        ((1, 28, 28), True),
        ((0, 28, 28), True),
        ((5000, 28, 28), True),
        ((28, 28), False),
        ((1, 28, 27), False),
        ((1, 28, 28, 1), False),
        ((), False),
    ],
)
def test_a_spec_accepts_any_size_where_it_says_minus_one(shape, accepted: bool) -> None:
    assert SPEC.accepts_shape(shape) is accepted


def test_a_spec_describes_itself_and_writes_v2_metadata() -> None:
    assert SPEC.describe() == "'input' of shape [-1, 28, 28] (FP32)"
    assert SPEC.to_dict() == {"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}
    assert TensorSpec("s", "INT64", ()).accepts_shape(())


def test_a_signature_finds_its_inputs_by_name() -> None:
    signature = ModelSignature(inputs=(SPEC,), outputs=())
    assert signature.input("input") is SPEC and signature.labels is None
    assert signature.inputs_by_name == {"input": SPEC}
    assert SPEC.dtype == V2_TO_NUMPY[SPEC.datatype]
    with pytest.raises(KeyError):
        signature.input("pixels")


@pytest.mark.parametrize(
    ("shape", "cap", "expected"),
    [
        ((3,), 1000, 3),  # every axis fixed: its size
        ((2, 3), 4, 4),  # ... but never beyond the cap
        ((-1, 28, 28), 10_000, 784 * 12),  # whole rows within the cap
        ((-1, 3), 2, 0),  # not even one row fits
        ((-1, -1), 500, 500),  # nothing fixed: the cap
        ((), 100, 1),  # a scalar
    ],
)
def test_a_specs_bound_on_numbers(shape, cap: int, expected: int) -> None:
    assert TensorSpec("x", "FP32", shape).max_values(cap) == expected


def test_a_signatures_bound_counts_outputs_only_as_cotangents() -> None:
    signature = ModelSignature(
        (TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (5, 7)),)
    )
    assert signature.max_values(1000) == 999
    assert signature.max_values(20) == 18
    assert signature.max_values(20, cotangents=True) == 20  # y's 35 numbers, capped


FLOAT_LAYOUTS = [order + code for order in "<>" for code in ("f2", "f4", "f8", "c8", "c16")] + [
    "=f4",
    "=f8",
]


@pytest.mark.parametrize("layout", FLOAT_LAYOUTS)
@pytest.mark.parametrize("size", [1, 7, 784, 40_000])  # 40,000 values: past the byte screen
def test_all_finite_agrees_with_numpy_and_finds_every_nan_and_infinity(layout, size) -> None:
    dtype = np.dtype(layout)
    values = np.random.default_rng(size).standard_normal(size) * 100
    array = values.astype(dtype) if dtype.kind == "f" else (values + 1j * values).astype(dtype)
    assert all_finite(array)
    for bad in (np.nan, np.inf, -np.inf):
        for where in {0, size // 2, size - 1}:
            spoilt = array.copy()
            spoilt[where] = bad if dtype.kind == "f" else complex(1.0, bad)
            assert not all_finite(spoilt), (bad, where)


@pytest.mark.parametrize("layout", FLOAT_LAYOUTS)
def test_all_finite_lets_the_largest_finite_numbers_pass(layout) -> None:
    """The screen suspects them (their top byte is a NaN's), numpy then clears them."""
    dtype = np.dtype(layout)
    largest = np.finfo(dtype).max
    array = np.array([largest, -largest, 0.0, np.finfo(dtype).tiny], dtype=dtype)
    assert all_finite(array)


def test_all_finite_of_other_arrays() -> None:
    assert all_finite(np.zeros(0, np.float32))
    assert all_finite(np.arange(10))  # integers are always finite
    assert not all_finite(np.array([[1.0, np.nan], [2.0, 3.0]], np.float32).T)  # not contiguous
    assert all_finite(np.ones((28, 28), np.float32)[::2, ::3])


@pytest.mark.parametrize(
    ("values", "layout", "fits"),
    [
        ([0.0, -1.5, 1e30, 2.0**112], "<f8", True),
        ([0.0, 2.0**113], "<f8", False),  # may not fit: left to numpy
        ([1.0, np.nan], "<f8", False),
        ([1.0, -np.inf], ">f8", False),
        ([1.0, 2.0], ">f8", True),
        ([1.0, 2.0], "<f4", False),  # float32 already: nothing to screen
        (np.ones(10_000), "<f8", False),  # 80 KB: past the screen
    ],
)
def test_casts_finite_clears_only_float64_that_surely_casts_finite(values, layout, fits) -> None:
    array = np.array(values, dtype=layout)
    assert casts_finite(array, np.dtype(np.float32)) is fits
    if fits:
        assert np.isfinite(array.astype(np.float32)).all()
