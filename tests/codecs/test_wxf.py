"""WXF codec: round trips against wolframclient (the reference), malformed input, golden files."""

from __future__ import annotations

import os
import random
import struct
import time
import zlib
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from wolframclient.deserializers import binary_deserialize
from wolframclient.language import wl
from wolframclient.language.array import NumericArray, PackedArray
from wolframclient.serializers import export

from mlbridge.codecs.wxf import MEDIA_TYPE, WxfCodec, dumps, loads
from mlbridge.errors import ModelNotFound, PayloadError, ShapeMismatch

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
GOLDEN_REQUEST = TESTDATA / "mnist-8000.request.wxf"
MNIST_8000 = 0  # index of image 8000 in the held-out `mnist` fixture

CODEC = WxfCodec()


def wxf(expr: object, compress: bool = False) -> bytes:
    """The reference encoding of ``expr``, by wolframclient."""
    return export(expr, target_format="wxf", compress=compress)


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic values that use the dtype's range, including its extremes."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    if dtype.kind == "f":
        values = np.random.default_rng(7).standard_normal(count) * 1e3
        return values.astype(dtype).reshape(shape)
    low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    values = [low + (high - low) * k // (count - 1) for k in range(count)]
    return np.array(values, dtype).reshape(shape)


NUMPY_DTYPES = ["float32", "float64", "int8", "int16", "int32", "int64"]
NUMPY_DTYPES += ["uint8", "uint16", "uint32", "uint64"]


# --- decoding what wolframclient writes --------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["8:", "8C:"])
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 1, 3)])
def test_numeric_array_from_wolframclient(dtype, shape, compress):
    array = sample(dtype, shape)
    body = wxf(array, compress)
    assert body.startswith(b"8C:" if compress else b"8:\xc2")
    decoded = CODEC.decode_tensor(body)
    assert decoded.dtype == np.dtype(dtype) and decoded.dtype.isnative
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)


def test_mnist_held_out_numeric_array(mnist):
    images = mnist[0]
    body = wxf(images)
    assert images.shape == (2000, 28, 28) and body.startswith(b"8:\xc2\x22\x03")
    decoded = CODEC.decode_tensor(body)
    assert decoded.dtype == np.float32 and decoded.shape == (2000, 28, 28)
    assert decoded.tobytes() == images.tobytes()


def test_mnist_held_out_compressed(mnist):
    images = mnist[0][:50]
    body = wxf(images, compress=True)
    assert body.startswith(b"8C:") and len(body) < images.nbytes // 2
    assert CODEC.decode_tensor(body).tobytes() == images.tobytes()


LISTS = [
    ([[1, 2], [3, 4]], np.int64, (2, 2)),
    ([[1.5, 2.0], [3.0, -4.25]], np.float64, (2, 2)),
    ([[1, 2.5], [3, 4]], np.float64, (2, 2)),  # mixed Integer and Real tokens
    ([1, -200, 70_000, 2**40, -(2**63)], np.int64, (5,)),  # every integer token size
    ([[[0.0] * 3] * 4] * 2, np.float64, (2, 4, 3)),
    ([Decimal("1.25"), Decimal("-3.5E-10"), 2.0], np.float64, (3,)),  # BigReal text
    ([2**63 - 1, -(2**63)], np.int64, (2,)),
    ([], np.float64, (0,)),
    ([[], []], np.float64, (2, 0)),
]


@pytest.mark.parametrize("compress", [False, True], ids=["8:", "8C:"])
@pytest.mark.parametrize(("value", "dtype", "shape"), LISTS)
def test_list_from_wolframclient(value, dtype, shape, compress):
    body = wxf(value, compress)
    decoded = CODEC.decode_tensor(body)
    assert decoded.dtype == dtype and decoded.shape == shape
    np.testing.assert_array_equal(decoded, np.array(value, dtype=np.float64).reshape(shape))


def test_list_of_mnist_images_matches_numeric_array(mnist):
    images = mnist[0][:3].astype(np.float64)
    decoded = CODEC.decode_tensor(wxf(images.tolist()))
    assert decoded.dtype == np.float64
    np.testing.assert_array_equal(decoded, images)


def test_big_integer_token_within_int64():
    # wolframclient only writes 'I' beyond 64 bits; Mathematica may write it for any size
    body = b"8:f\x02s\x04ListI\x0212I\x03-34"
    np.testing.assert_array_equal(CODEC.decode_tensor(body), [12, -34])


@pytest.mark.parametrize(
    ("text", "value"),
    [(b"1.25``28", 1.25), (b"-2.5`20.", -2.5), (b"3.`30*^-10", 3e-10), (b"7*^2", 700.0)],
)
def test_big_real_input_form(text, value):
    body = b"8:f\x01s\x04ListR" + bytes([len(text)]) + text
    assert CODEC.decode_tensor(body)[0] == value


@pytest.mark.parametrize(
    ("wl_type", "values", "dtype"),
    [
        ("Integer8", [-128, 127, 0, 1, 2, 3], np.int8),
        ("Integer16", [-32768, 32767, 0, 1, 2, 3], np.int16),
        ("Integer32", [-(2**31), 2**31 - 1, 0, 1, 2, 3], np.int32),
        ("Integer64", [-(2**63), 2**63 - 1, 0, 1, 2, 3], np.int64),
        ("Real32", [0.5, -1.25, 3.0, 1e-7, 2.0, 3.0], np.float32),
        ("Real64", [0.1, -1e300, 3.0, 1e-300, 2.0, 3.0], np.float64),
    ],
)
@pytest.mark.parametrize("kind", [PackedArray, NumericArray])
def test_typed_arrays_from_wolframclient(kind, wl_type, values, dtype):
    body = wxf(kind(values, wl_type, shape=(2, 3)))
    assert body[2] == (0xC1 if kind is PackedArray else 0xC2)
    decoded = CODEC.decode_tensor(body)
    assert decoded.dtype == dtype and decoded.shape == (2, 3)
    np.testing.assert_array_equal(decoded, np.array(values, dtype).reshape(2, 3))


def test_decode_accepts_bytearray_and_memoryview():
    body = wxf(np.arange(4, dtype=np.float32))
    for view in (bytearray(body), memoryview(body)):
        np.testing.assert_array_equal(CODEC.decode_tensor(view), [0, 1, 2, 3])


# --- encoding, read back by wolframclient ----------------------------------------------------


@pytest.mark.parametrize("dtype", [*NUMPY_DTYPES, ">f4", ">i8"])
@pytest.mark.parametrize("shape", [(10,), (2, 10), (3, 2, 2)])
def test_encode_tensor_read_by_wolframclient(dtype, shape):
    array = sample(dtype, shape)
    body = CODEC.encode_tensor(array)
    assert body.startswith(b"8:\xc2")
    back = binary_deserialize(body)
    assert back.shape == shape and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(loads(body), array)


def test_encode_tensor_float32_bits_exact(mnist):
    logits = (mnist[0][:64].reshape(64, -1)[:, :10] - 0.5) * np.float32(1e-7)
    logits[0, :4] = [np.float32(1.5e-45), -0.0, np.finfo(np.float32).max, np.float32(1 / 3)]
    body = dumps(logits)
    assert binary_deserialize(body).tobytes() == logits.tobytes()
    assert loads(body).tobytes() == logits.tobytes()


def test_encode_tensor_non_contiguous():
    array = np.arange(24, dtype=np.float32).reshape(4, 6)[::2, ::3]
    np.testing.assert_array_equal(binary_deserialize(dumps(array)), array)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.float64(2.5), 2.5),
        (np.int64(-7), -7),
        (np.zeros((0,), np.float32), ()),  # wolframclient reads a List as a tuple
        (np.zeros((2, 0), np.float32), ((), ())),
    ],
)
def test_encode_scalars_and_empty(array, expected):
    assert binary_deserialize(dumps(array)) == expected


@pytest.mark.parametrize("error", [ShapeMismatch("expects [-1, 28, 28]"), ModelNotFound("no 'x'")])
def test_encode_error_is_failure(error):
    failure = binary_deserialize(CODEC.encode_error(error))
    assert failure.head == wl.Failure
    tag, fields = failure.args
    assert tag == "MLBridge"
    assert fields == {
        "MessageTemplate": error.message,
        "Status": error.status,
        "Code": error.code,
    }
    assert list(fields) == ["MessageTemplate", "Status", "Code"]


def test_encode_error_unicode_message():
    failure = binary_deserialize(CODEC.encode_error(PayloadError("found ‘ü’ at byte 3")))
    assert failure.args[1]["MessageTemplate"] == "found ‘ü’ at byte 3"


def test_media_type_and_sniff():
    assert CODEC.media_type == MEDIA_TYPE == "application/vnd.wolfram.wxf"
    assert CODEC.sniff(b"8:\xc2") and CODEC.sniff(b"8C:x\x9c")
    for body in (b"", b"8", b"{{0.5}}", b"[[0.5]]", b"secret\n8:", b"88:"):
        assert not CODEC.sniff(body)


# --- malformed input ----------------------------------------------------------------------

SMALL_PAYLOADS = {
    "numeric_array": wxf(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "packed_array": wxf(PackedArray([1.5, 2.5, 3.5, 4.5], "Real64", shape=(2, 2))),
    "list": wxf([[1, -300], [70_000, 2**40], [0.5, Decimal("1.5")]]),
    "compressed": wxf(np.arange(6, dtype=np.int16).reshape(3, 2), compress=True),
}


@pytest.mark.parametrize("name", SMALL_PAYLOADS)
def test_every_truncation_is_payload_error(name):
    body = SMALL_PAYLOADS[name]
    CODEC.decode_tensor(body)  # the whole payload is valid
    for cut in range(len(body)):
        with pytest.raises(PayloadError):
            CODEC.decode_tensor(body[:cut])


def test_truncated_numeric_array_message():
    body = wxf(np.zeros((2, 28, 28), np.float32))[:120]
    with pytest.raises(PayloadError) as caught:
        CODEC.decode_tensor(body)
    assert str(caught.value) == (
        "truncated WXF: NumericArray declares 1568 Real32 values (6272 bytes) "
        "but only 112 bytes remain"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "expected the header b'8:' or b'8C:'"),
        (b"7:\xc2", "found b'7:\\xc2'"),
        (b"{{0.5, 0.25}}", "not WXF"),
        (b"8:z", "found unknown token 0x7a at byte 2; expected a NumericArray"),
        (b"8:s\x01x", "found Symbol 'x' at byte 2"),
        (b"8:r" + bytes(8), "found Real64 at byte 2"),
        (b"8:f\x01s\x05Listsr" + bytes(8), "head Symbol 'Lists'"),
        (b"8:f\x01S\x04Listr" + bytes(8), "head String 'List'"),
        (b"8:f\x02s\x04Listr" + bytes(8) + b"s\x01x", "found Symbol 'x' at byte 19 inside a List"),
        (b"8:f\x01s\x04ListS\x01x", "found String 'x' at byte 10 inside a List"),
        (
            b"8:f\x01s\x04List\xc2\x22\x01\x01" + bytes(4),
            "found NumericArray at byte 10 inside a List",
        ),
        (b"8:f\x01s\x04ListI\x021x", "BigInteger at byte 10 has malformed digits b'1x'"),
        (b"8:f\x01s\x04ListR\x03abc", "BigReal at byte 10 has malformed digits"),
        (b"8:\xc2\x22\x00", "rank 0 at byte 4; expected 1 to 16"),
        (b"8:\xc2\x22\x11" + b"\x01" * 17 + bytes(4), "rank 17"),
        (b"8:\xc2\x22\x02\x02\x00", "dimension 1 is 0 at byte 6"),
        (b"8:\xc2\x05\x01\x01" + bytes(8), "type 0x05 at byte 3 is not one of Integer8"),
        (b"8:\xc2\x33\x01\x01" + bytes(8), "ComplexReal32 at byte 3 is not supported"),
        (b"8:\xc1\x10\x01\x01\x00", "PackedArray type 0x10 at byte 3 is not one of Integer8"),
        (wxf(np.zeros(2, np.float32)) + b"\x00", "1 trailing bytes at byte 14"),
        (wxf([[1, 2], [3]]), "depth 1: a List of length 2 then one of length 1 at byte 22"),
        (wxf([[1, 2], 3]), "ragged WXF List at depth 1: found Integer8 at byte 22"),
        (wxf([1, [2, 3]]), "ragged WXF List at depth 1: found a List at byte 12"),
        (wxf([[[1]], [1]]), "ragged WXF List at depth 2: found a number at byte 36"),
        (wxf([[1.0, 2.0], [3.0, 4.0, 5.0]]), "a List of length 2 then one of length 3"),
        (wxf([2**64]), "BigInteger 18446744073709551616 at byte 10 does not fit in 64 bits"),
        (wxf(wl.Failure("x")), "head Symbol 'Failure'"),
    ],
)
def test_malformed_message(body, message):
    with pytest.raises(PayloadError) as caught:
        CODEC.decode_tensor(body)
    assert message in str(caught.value)


def test_nesting_deeper_than_rank_limit():
    body = b"8:" + b"f\x01s\x04List" * 17 + b"C\x01"
    with pytest.raises(PayloadError, match="deeper than 16"):
        CODEC.decode_tensor(body)
    assert CODEC.decode_tensor(b"8:" + b"f\x01s\x04List" * 16 + b"C\x01").shape == (1,) * 16


@pytest.mark.parametrize("token", [b"\xc2\x22", b"\xc1\x22"])
def test_huge_declared_dims_fail_fast(token):
    huge = b"\xff" * 9 + b"\x01"  # 2**64 - 1
    body = b"8:" + token + b"\x03" + huge + huge + b"\x1c" + bytes(16)
    started = time.perf_counter()
    with pytest.raises(PayloadError, match="but only 16 bytes remain"):
        CODEC.decode_tensor(body)
    assert time.perf_counter() - started < 0.05


def test_huge_list_length_fails_fast():
    body = b"8:f\xff\xff\xff\xff\x0fs\x04ListC\x01"
    with pytest.raises(PayloadError, match="declares 4294967295 elements but only 8 bytes"):
        CODEC.decode_tensor(body)


@pytest.mark.parametrize(
    ("varint", "message"),
    [
        (b"\x80" * 10 + b"\x01", "is longer than 10 bytes"),
        (b"\xff" * 9 + b"\x02", "exceeds 64 bits"),
        (b"\xff" * 9 + b"\x7f", "exceeds 64 bits"),
    ],
)
def test_overlong_varint(varint, message):
    with pytest.raises(PayloadError, match=f"varint for the NumericArray rank at byte 4 {message}"):
        CODEC.decode_tensor(b"8:\xc2\x22" + varint + bytes(64))


def zip_bomb(mebibytes: int) -> bytes:
    """A valid zlib stream of ``mebibytes`` MiB of zeros, built without compressing them all.

    After a full flush the compressor's state is reset, so compressing the next
    MiB of zeros yields the same bytes: one block repeated, then the end marker
    and the Adler-32 of n zero bytes, which is (n mod 65521) << 16 | 1.
    """
    compressor = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == block  # zlib header + block
    final_block = compressor.flush()[:-4]
    checksum = struct.pack(">I", ((mebibytes << 20) % 65521) << 16 | 1)
    return first + block * (mebibytes - 1) + final_block + checksum


def test_zip_bomb_builder_is_honest():
    assert zlib.decompress(zip_bomb(5)) == bytes(5 << 20)


def test_zip_bomb_is_payload_error():
    bomb = b"8C:" + zip_bomb(1024)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 << 20
    codec = WxfCodec(max_decompressed=16 << 20)
    started = time.perf_counter()
    with pytest.raises(PayloadError, match=f"more than {16 << 20} bytes"):
        codec.decode_tensor(bomb)
    assert time.perf_counter() - started < 1.0


def test_decompressed_limit_is_exact():
    body = wxf(np.zeros(100, np.float64), compress=True)
    size = len(zlib.decompress(body[3:]))
    assert WxfCodec(max_decompressed=size).decode_tensor(body).shape == (100,)
    with pytest.raises(PayloadError, match="decompresses to more than"):
        WxfCodec(max_decompressed=size - 1).decode_tensor(body)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not zlib at all", "not valid zlib data"),
        (zlib.compress(b"\xc2\x22\x01\x01" + bytes(4)) + b"junk", "4 trailing bytes after"),
        (zlib.compress(b"\xc2\x22\x01\x01" + bytes(4))[:-3], "ends before its end marker"),
        (zlib.compress(b"\xc2\x22\x00"), "at byte 2 of the decompressed 8C: payload"),
    ],
)
def test_bad_compressed_payload(payload, message):
    with pytest.raises(PayloadError, match=message):
        CODEC.decode_tensor(b"8C:" + payload)


def test_random_corruption_raises_only_payload_error():
    rng = random.Random(8000)
    seeds = [*SMALL_PAYLOADS.values(), wxf([[0.5, 1], [2**40, -3]])]
    for _ in range(3000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(2, len(body))] = rng.randrange(256)
        try:
            result = CODEC.decode_tensor(bytes(body))
        except PayloadError:
            continue
        assert isinstance(result, np.ndarray) and result.dtype.kind in "iuf"


# --- golden payloads -------------------------------------------------------------------------


def regenerate_golden(images: np.ndarray) -> None:
    """Write the golden request: image 8000 as wolframclient's float32 [28,28] NumericArray."""
    GOLDEN_REQUEST.write_bytes(wxf(images[MNIST_8000]))


def test_golden_request(mnist):
    image = mnist[0][MNIST_8000]
    if os.environ.get("MLBRIDGE_REGEN_GOLDEN") == "1":
        regenerate_golden(mnist[0])
    body = GOLDEN_REQUEST.read_bytes()
    assert body.startswith(b"8:\xc2\x22\x02\x1c\x1c") and len(body) == 7 + 28 * 28 * 4
    decoded = CODEC.decode_tensor(body)
    assert decoded.dtype == np.float32 and decoded.shape == (28, 28)
    assert decoded.tobytes() == image.tobytes()
    assert body == wxf(image) == dumps(image)
