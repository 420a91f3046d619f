"""The EvidenceTweakingLayer and its squash functions: values, gradients, config."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.training
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from mlbridge.errors import ConfigError  # noqa: E402
from mlbridge.training.layers import (  # noqa: E402
    SQUASHES,
    EvidenceTweakingLayer,
    asinh,
    atan,
    squash,
)

POINTS = np.array([-3.0, 0.0, 1e-3, 7.0])
REFERENCE = {"asinh": np.arcsinh, "atan": np.arctan}


def _layer(nonlinearity: str, a: float, b: float, dtype: str = "float64") -> EvidenceTweakingLayer:
    layer = EvidenceTweakingLayer(nonlinearity, dtype=dtype)
    layer.build((None, len(POINTS)))
    layer.ab.assign(np.array([a, b], dtype=dtype))
    return layer


@pytest.mark.parametrize("nonlinearity", sorted(SQUASHES))
def test_known_values_at_a2_b05(nonlinearity: str) -> None:
    got = np.asarray(_layer(nonlinearity, 2.0, 0.5)(POINTS[None, :]))[0]
    expected = 2.0 * REFERENCE[nonlinearity](0.5 * POINTS)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert got[1] == 0.0
    assert got[2] == pytest.approx(1e-3, rel=1e-6)  # ≈ A·B·x near zero


@pytest.mark.parametrize("nonlinearity", sorted(SQUASHES))
def test_known_values_in_float32(nonlinearity: str) -> None:
    got = np.asarray(_layer(nonlinearity, 2.0, 0.5, "float32")(POINTS[None, :].astype("float32")))
    np.testing.assert_allclose(
        got[0], 2.0 * REFERENCE[nonlinearity](0.5 * POINTS), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("function", [asinh, atan], ids=["asinh", "atan"])
def test_squashes_work_alone_on_a_wide_range(function) -> None:
    x = np.concatenate([-np.logspace(-8, 8, 50), [0.0], np.logspace(-8, 8, 50)])
    got = np.asarray(function(x))
    np.testing.assert_allclose(got, REFERENCE[function.__name__](x), rtol=1e-12)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("nonlinearity", sorted(SQUASHES))
def test_gradients_match_finite_differences(nonlinearity: str) -> None:
    layer = _layer(nonlinearity, 2.0, 0.5)
    x = tf.constant(POINTS[None, :])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer(x))
    grad_ab = tape.gradient(total, layer.ab).numpy()
    grad_x = tape.gradient(total, x).numpy()[0]
    step = 1e-6

    def total_at(a: float, b: float, xs: np.ndarray) -> float:
        return float(np.sum(np.asarray(_layer(nonlinearity, a, b)(xs[None, :]))))

    numeric_a = (total_at(2 + step, 0.5, POINTS) - total_at(2 - step, 0.5, POINTS)) / (2 * step)
    numeric_b = (total_at(2, 0.5 + step, POINTS) - total_at(2, 0.5 - step, POINTS)) / (2 * step)
    numeric_x = [
        (total_at(2, 0.5, POINTS + step * e) - total_at(2, 0.5, POINTS - step * e)) / (2 * step)
        for e in np.eye(len(POINTS))
    ]
    np.testing.assert_allclose(grad_ab, [numeric_a, numeric_b], rtol=1e-6)
    np.testing.assert_allclose(grad_x, numeric_x, rtol=1e-6)


def test_weight_is_one_trainable_vector_of_two() -> None:
    layer = EvidenceTweakingLayer("atan")
    layer.build((None, 10))
    assert [tuple(w.shape) for w in layer.trainable_weights] == [(2,)]


@pytest.mark.parametrize("nonlinearity", sorted(SQUASHES))
def test_config_round_trip(nonlinearity: str) -> None:
    layer = EvidenceTweakingLayer(nonlinearity, name="tweak", trainable=False)
    config = layer.get_config()
    assert config["nonlinearity"] == nonlinearity
    assert config["name"] == "tweak"
    clone = EvidenceTweakingLayer.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "tweak" and not clone.trainable


def test_registered_under_mlbridge_package() -> None:
    assert (
        keras.saving.get_registered_object("mlbridge>EvidenceTweakingLayer")
        is EvidenceTweakingLayer
    )


def test_unknown_nonlinearity_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'tanh'.*asinh, atan"):
        EvidenceTweakingLayer("tanh")
    with pytest.raises(ConfigError, match="asinh, atan"):
        squash("sinh")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asinh_gradient_is_finite_and_right_everywhere(dtype: str) -> None:
    x = tf.constant([-1e30, -1e9, -1.0, -1e-9, 0.0, 1e-9, 1e-2, 1e8, 1e30], dtype=dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = asinh(x)
    grad = tape.gradient(y, x).numpy()
    exact = 1.0 / np.sqrt(1.0 + np.square(x.numpy().astype("float64")))
    np.testing.assert_allclose(grad, exact, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(y.numpy(), np.arcsinh(x.numpy().astype("float64")), rtol=1e-6)
