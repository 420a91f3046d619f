"""KServe V2 inference requests and responses: JSON, with the binary tensor extension.

The one owner of the V2 wire format, in all four directions: the server
decodes requests and encodes responses, the Python client (and the golden
files and benches) encode requests and decode responses.

With the extension, the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by raw little-endian tensor bytes, in the order of the
tensors whose ``parameters.binary_data_size`` is set.

Numbers are strict: ``data`` holds JSON numbers only (no strings), integer
datatypes take whole numbers within their range, and a number that does not
fit its datatype (``1e300`` as FP32) is refused, never made infinite. JSON
has no NaN or Infinity; raw binary tensors may hold them, and the inference
layer refuses them unless the model opts in.
"""

from __future__ import annotations

import array as pyarray
import json
from math import prod
from typing import Any

import numpy as np
import orjson

from ..errors import BadRequest, PayloadError
from ..protocol import (
    InferenceRequest,
    InferenceResponse,
    casts_finite,
    numpy_dtype,
    v2_datatype,
)
from .json_tensors import load_with_arrays

JSON_MEDIA_TYPE = "application/json"
BINARY_MEDIA_TYPE = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
BINARY_DATA_SIZE = "binary_data_size"  # a tensor's parameter: its bytes in the binary section
NON_JSON_CONSTANTS = (b"NaN", b"Infinity", b"nan", b"inf")
MAX_JSON_DEPTH = 1024  # orjson's nesting limit
MAX_DIMENSION = 2**40  # far beyond any body the server accepts; keeps numpy's shapes valid
MAX_RANK = 32  # numpy's own limit is 64; no model here has more than a handful of axes
PLAIN_JSON_MAX = 4 << 20  # bytes of JSON read into Python objects (~35x: at most ~140 MB)
NUMBER_KINDS = "biuf"  # what np.asarray makes of JSON numbers (strings give U, mixtures O)


def loads(text: bytes) -> Any:
    """Parse JSON strictly (NaN and Infinity are not JSON); say where it broke."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise PayloadError(_json_error(text, error)) from None


def _json_error(text: bytes, error: orjson.JSONDecodeError) -> str:
    """Say what broke and where; name the non-JSON constants people send most."""
    found = text[error.pos : error.pos + 9] if error.pos >= 0 else b""
    constant = next((c for c in NON_JSON_CONSTANTS if found.lstrip(b"-").startswith(c)), None)
    if constant is not None:
        return f"invalid JSON: {constant.decode()} is not a JSON number; send finite numbers"
    if "infinity when parsed" in error.msg:
        return (
            f"invalid JSON at line {error.lineno} column {error.colno}: a number too large "
            "for a 64-bit float; send magnitudes up to 1.8e308"
        )
    if "UTF-8" in error.msg:
        return "invalid JSON: the body is not UTF-8 text"
    if "depth" in error.msg or "recursion" in error.msg:
        return f"invalid JSON: arrays nested too deeply (at most {MAX_JSON_DEPTH} levels)"
    return f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"


def dumps(document: Any) -> bytes:
    """Compact JSON; numpy arrays written natively, each float at its own precision."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def json_values(array: np.ndarray) -> Any:
    """A tensor as :func:`dumps` writes it fastest: the array itself when orjson can write it."""
    if array.ndim and array.dtype.kind in "biuf" and array.dtype != np.float16:
        return np.ascontiguousarray(array, array.dtype.newbyteorder("="))
    return array.tolist()


def decode_request(body: bytes, header_length: str | None = None) -> InferenceRequest:
    """Read a V2 infer request, JSON alone or JSON followed by binary tensors."""
    header, binary = _split(body, header_length)
    document = _load_tensors(header, "inputs")
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise PayloadError('expected a JSON object with an "inputs" list')
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for index, item in enumerate(document["inputs"]):
        name, array, used = _decode_tensor(index, item, binary, offset)
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise PayloadError(f"binary section holds {len(binary)} bytes; the inputs declare {offset}")
    parameters = _parameters(document, "the request")
    return InferenceRequest(
        inputs=inputs,
        id=_optional_str(document, "id"),
        outputs=_requested_outputs(document),
        parameters=parameters,
        binary_outputs=_binary_outputs(parameters, document.get("outputs")),
    )


def _load_tensors(header: bytes, section: str) -> Any:
    """The JSON header; large numeric ``data`` of ``section`` come as arrays already.

    A header the array route declines is read by orjson whole, which costs up to 35 times
    its size in Python objects; beyond :data:`PLAIN_JSON_MAX` that is refused.
    """
    document = load_with_arrays(header, section)
    if document is not None:
        return document
    if len(header) > PLAIN_JSON_MAX:
        raise PayloadError(
            f"a V2 JSON body over {PLAIN_JSON_MAX >> 20} MiB must carry each tensor's 'data' "
            "as an array of numbers, flat or nested as its 'shape'; this one holds something "
            "else (strings, booleans, other nesting, a number out of range, or malformed JSON): "
            "send it in smaller requests, or use the binary tensor extension"
        )
    return loads(header)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise PayloadError(f"{HEADER_LENGTH} must be an integer; got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise PayloadError(f"{HEADER_LENGTH} is {length}; the body has {len(body)} bytes")
    return body[:length], body[length:]


def _decode_tensor(
    index: int, item: Any, binary: bytes, offset: int, section: str = "inputs"
) -> tuple[str, np.ndarray, int]:
    """One tensor entry: an input of a request or an output of a response."""
    if not isinstance(item, dict):
        raise PayloadError(f"{section}[{index}] must be an object with name, shape, datatype, data")
    name = item.get("name")
    where = f"{section[:-1]} {name!r}" if isinstance(name, str) else f"{section}[{index}]"
    if not isinstance(name, str):
        raise PayloadError(f"{where}: missing string field 'name'")
    shape = _shape(where, item.get("shape"))
    dtype = _dtype(where, item.get("datatype"))
    size = _parameters(item, where).get("binary_data_size")
    if size is not None:
        return name, _from_binary(where, binary, offset, size, shape, dtype), size
    if "data" not in item:
        raise PayloadError(f"{where}: missing 'data' (or parameters.binary_data_size)")
    return name, _from_json(where, item["data"], shape, dtype), 0


def _parameters(entry: dict, where: str) -> dict[str, Any]:
    """An entry's ``parameters``: an object, or absent."""
    parameters = entry.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise PayloadError(f"{where}: 'parameters' must be a JSON object")
    return parameters


def _shape(where: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIMENSION for d in shape
    ):
        shown = repr(shape)[:80]
        raise PayloadError(
            f"{where}: 'shape' must be a list of integers from 0 to {MAX_DIMENSION}; got {shown}"
        )
    if len(shape) > MAX_RANK:
        raise PayloadError(f"{where}: 'shape' has {len(shape)} axes; at most {MAX_RANK}")
    if prod(filter(None, shape)) > MAX_DIMENSION:  # numpy refuses such shapes even empty
        raise PayloadError(f"{where}: 'shape' {shape} spans more than {MAX_DIMENSION} values")
    return tuple(shape)


def _dtype(where: str, datatype: Any) -> np.dtype:
    try:
        return numpy_dtype(datatype)
    except BadRequest as error:
        raise PayloadError(f"{where}: {error.message}") from None


def _from_json(where: str, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    array = json_numbers(where, data, dtype)
    expected = prod(shape)
    if array.size != expected:
        raise PayloadError(
            f"{where}: shape {list(shape)} needs {expected} values; 'data' holds {array.size}"
        )
    return array.reshape(shape)


def json_numbers(where: str, data: Any, dtype: np.dtype) -> np.ndarray:
    """JSON numbers (a number, or nested lists of them) as an array of ``dtype``; strictly.

    Strings, numbers beyond 64 bits, fractions for integer datatypes and
    values outside the datatype's range are a PayloadError that names them.
    ``data`` may also be the array :mod:`.json_tensors` read such numbers into.
    """
    found = data if isinstance(data, np.ndarray) else _flat_reals(data)
    if found is None:
        try:
            found = np.asarray(data)
        except (ValueError, TypeError, OverflowError):  # ragged, or nested beyond numpy's axes
            raise PayloadError(f"{where}: {_expected(dtype)}, rectangular") from None
    if found.dtype.kind not in NUMBER_KINDS:
        what = "strings" if found.dtype.kind in "US" else "values that are not numbers"
        raise PayloadError(f"{where}: {_expected(dtype)}; found {what}")
    if found.dtype == dtype or found.size == 0:
        return found.astype(dtype, copy=False)
    return _cast_numbers(where, found, dtype)


def _flat_reals(data: Any) -> np.ndarray | None:
    """A flat list of reals (what most clients send), read by the array module, which refuses
    anything but numbers as it goes; None for any other data, left to numpy to judge."""
    if not (isinstance(data, list) and data and type(data[0]) is float):
        return None
    try:
        return np.frombuffer(pyarray.array("d", data), np.float64)
    except (TypeError, OverflowError):  # a string, a list, or an integer beyond a float
        return None


def _expected(dtype: np.dtype) -> str:
    return f"'data' must be a flat or nested list of {dtype.name} numbers"


def _cast_numbers(where: str, found: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        if dtype.itemsize >= 4 and found.dtype.itemsize <= dtype.itemsize:
            return found.astype(dtype)  # widening (or any integer to FP32): never infinite
        if casts_finite(found, dtype):
            return found.astype(dtype)  # no value can overflow: no errstate needed
        try:
            with np.errstate(over="raise"):
                return found.astype(dtype)
        except FloatingPointError:  # JSON has no NaN or Infinity: a value overflowed
            with np.errstate(over="ignore"):
                index = int(np.argmin(np.isfinite(found.astype(dtype)).ravel()))
            raise PayloadError(
                f"{where}: {found.ravel()[index]} (value {index + 1}) is too large for "
                f"{dtype.name}; expected magnitudes up to {float(np.finfo(dtype).max):.4g}"
            ) from None
    if found.dtype.kind == "f" and not np.array_equal(found, np.trunc(found)):
        raise PayloadError(f"{where}: 'data' holds fractions; {dtype.name} takes whole numbers")
    low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if found.min().item() < low or found.max().item() > high:  # exactly, 2.0**63 too
        raise PayloadError(
            f"{where}: 'data' holds values outside {dtype.name}'s range {low} to {high}"
        )
    return found.astype(dtype)


def _from_binary(
    where: str, binary: bytes, offset: int, size: Any, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    expected = prod(shape) * dtype.itemsize
    if not isinstance(size, int) or isinstance(size, bool) or size != expected:
        raise PayloadError(
            f"{where}: shape {list(shape)} of {dtype.name} needs {expected} bytes; "
            f"binary_data_size is {size!r}"
        )
    if offset + size > len(binary):
        raise PayloadError(f"{where}: the binary section ends before this tensor's {size} bytes")
    return from_little_endian(binary, dtype, shape, offset)


def little_endian_bytes(array: np.ndarray) -> bytes:
    """A tensor's raw bytes as the binary extension carries them (little-endian, C order)."""
    return np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()


def from_little_endian(
    buffer: bytes, dtype: np.dtype, shape: tuple[int, ...], offset: int = 0
) -> np.ndarray:
    """A tensor read from raw little-endian bytes at ``offset``, in native byte order."""
    little = dtype.newbyteorder("<")
    return np.frombuffer(buffer, little, prod(shape), offset).reshape(shape).astype(dtype)


def _optional_str(document: dict, key: str) -> str | None:
    value = document.get(key)
    return value if isinstance(value, str) else None


def _requested_outputs(document: dict) -> list[str] | None:
    outputs = document.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise PayloadError("'outputs' must be a list of objects with a 'name'")
    return [o["name"] for o in outputs]


def _binary_outputs(parameters: Any, outputs: Any) -> set[str]:
    """Names of the outputs the client wants as binary data ("*" for all)."""
    wanted = set()
    if isinstance(parameters, dict) and parameters.get("binary_data_output"):
        wanted.add("*")
    for output in outputs or []:
        if _parameters(output, f"output {output['name']!r}").get("binary_data"):
            wanted.add(output["name"])
    return wanted


def encode_response(response: InferenceResponse, binary: set[str]) -> tuple[bytes, dict[str, str]]:
    """Write a V2 response; outputs named in ``binary`` (or ``*``) go as raw bytes."""
    outputs, chunks = [], []
    for name, array in response.outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": v2_datatype(array.dtype),
        }
        if "*" in binary or name in binary:
            raw = little_endian_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_values(array.ravel())
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "outputs": outputs}
    if response.model_version:
        document["model_version"] = response.model_version
    if response.id is not None:
        document["id"] = response.id
    header = dumps(document)
    if not chunks:
        return header, {"content-type": JSON_MEDIA_TYPE}
    headers = {"content-type": BINARY_MEDIA_TYPE, HEADER_LENGTH: str(len(header))}
    return header + b"".join(chunks), headers


def encode_request(inputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """A binary-extension infer request and its headers; the reply's outputs come binary too."""
    entries, chunks = [], []
    for name, array in inputs.items():
        raw = little_endian_bytes(array)
        entries.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": v2_datatype(array.dtype),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    document = {"inputs": entries, "parameters": {"binary_data_output": True}}
    header = json.dumps(document).encode()
    headers = {
        "Content-Type": BINARY_MEDIA_TYPE,
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + b"".join(chunks), headers


def decode_response(body: bytes, header_length: str | None = None) -> InferenceResponse:
    """Read a V2 infer response, JSON alone or JSON followed by binary tensors."""
    header, binary = _split(body, header_length)
    document = _load_tensors(header, "outputs")
    if not isinstance(document, dict) or not isinstance(document.get("outputs"), list):
        raise PayloadError('expected a JSON object with an "outputs" list')
    offset, outputs = 0, {}
    for index, item in enumerate(document["outputs"]):
        name, array, used = _decode_tensor(index, item, binary, offset, "outputs")
        outputs[name] = array
        offset += used
    return InferenceResponse(
        model_name=str(document.get("model_name", "")),
        outputs=outputs,
        id=_optional_str(document, "id"),
        model_version=_optional_str(document, "model_version"),
    )
