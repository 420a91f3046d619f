"""Coverage-guided fuzzing of every decoder with atheris (libFuzzer for Python).

Run it for long, outside pytest (atheris is not in the test extra: it installs from a
wheel on CPython 3.11 x86-64 Linux, not everywhere)::

    .venv/bin/pip install atheris
    .venv/bin/python tests/codecs/test_fuzz_atheris.py -atheris_runs=2000000 -max_len=4096

The first input byte picks the decoder (Mathematica text, WXF incl. ``8C:``, JSON list,
V2 JSON, V2 binary with a header length, the association forms); the rest is the body.
A decoder may return numbers or raise a PayloadError (the BadRequest family); any other
exception, or a decode that takes more than :data:`MEMORY_FACTOR` times the body in
memory (plus what ``8C:`` inflates to), is a crash that libFuzzer reports and saves. The
pytest test below runs a few thousand inputs when atheris is installed, so that the
harness itself cannot rot; ``docs/reliability.md`` has the figures of the long run.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

LIMIT = 1 << 20  # the codecs' body limit: 8C: inflates at most 1 MiB
MEMORY_FACTOR = 64
SLACK = 1 << 20
DECODERS: list[Callable[[bytes], Any]] = []


def load_decoders() -> None:
    """The decoders under test (imported here, so that atheris can instrument them)."""
    from mlbridge.codecs import cas_codecs
    from mlbridge.codecs import v2 as v2_codec

    codecs = cas_codecs(max_decompressed=LIMIT)
    text, wxf = codecs["text/x-mathematica"], codecs["application/vnd.wolfram.wxf"]
    json = codecs["application/json"]

    def v2_binary(body: bytes) -> Any:
        length, rest = body[:1], body[1:]  # the first byte: the header length, 0 for none
        return v2_codec.decode_request(rest, str(length[0]) if length and length[0] else None)

    DECODERS[:] = [
        text.decode_tensor,
        text.decode_arguments,
        wxf.decode_tensor,
        wxf.decode_arguments,
        lambda body: wxf.decode_tensor(b"8C:" + zlib.compress(body)),
        json.decode_tensor,
        json.decode_arguments,
        v2_codec.decode_request,
        v2_binary,
    ]


def one_input(data: bytes) -> None:
    """The fuzz target: one decoder, one body; only numbers or a BadRequest may come out."""
    from mlbridge.errors import BadRequest

    if not data:
        return
    decode, body = DECODERS[data[0] % len(DECODERS)], data[1:]
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(BadRequest):
        decode(body)
    peak = tracemalloc.get_traced_memory()[1] - before
    if peak > MEMORY_FACTOR * (len(body) + _inflated(body)) + SLACK:
        raise MemoryError(f"decoder {data[0] % len(DECODERS)}: {peak} bytes for {len(body)}")


def _inflated(body: bytes) -> int:
    if not body.startswith(b"8C:"):
        return len(body) * 1100  # decoder 4 compresses the body itself: at most ~1000x back
    inflater, pending, produced = zlib.decompressobj(), body[3:], 0
    try:
        while produced <= LIMIT:  # what the decoder inflates, up to a corrupt block if any
            chunk = inflater.decompress(pending, 1 << 16)
            pending = inflater.unconsumed_tail
            if not chunk:
                break
            produced += len(chunk)
    except zlib.error:
        pass
    return produced


def seeds() -> list[bytes]:
    """Valid bodies for each decoder (its selector byte first): where the mutations start."""
    import numpy as np

    from mlbridge.codecs import v2 as v2_codec
    from mlbridge.codecs.mathematica import format_list
    from mlbridge.codecs.wxf import dumps

    array = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    text = format_list(array).encode()
    wxf_list = b"8:f\x02s\x04Listf\x02s\x04ListC\x01r" + bytes(8) + b"f\x02s\x04ListI\x0212R\x031.5"
    wxf_assoc = b"8:A\x02-S\x01x" + dumps(array)[2:] + b"-S\x09cotangentC\x01"
    binary, headers = v2_codec.encode_request({"x": array})
    length = int(headers["Inference-Header-Content-Length"])
    v2_json = b'{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": '
    v2_json += str(array.ravel().tolist()).encode() + b"}]}"
    bodies = [
        (0, text),
        (1, b'<|"x" -> ' + text + b', "cotangent" -> {Indeterminate, 1.*^-7}|>'),
        (2, dumps(array)),
        (2, b"8C:" + zlib.compress(dumps(array)[2:])),
        (3, wxf_assoc),
        (3, wxf_list),
        (4, dumps(array)[2:]),
        (5, str(array.tolist()).encode()),
        (6, b'{"x": [1, 2.5e3], "cotangent": 1}'),
        (7, v2_json),
        (8, bytes([length]) + binary if length < 256 else b"\x00" + v2_json),
    ]
    return [bytes([selector]) + body for selector, body in bodies]


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["mlbridge"]):
        load_decoders()
    corpus = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for folder in corpus[:1]:
        if folder.is_dir() and not any(folder.iterdir()):
            for index, seed in enumerate(seeds()):
                (folder / f"seed-{index}").write_bytes(seed)
    tracemalloc.start()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def test_atheris_harness_runs(tmp_path: Path) -> None:
    """A short run of the harness (the long one is documented in docs/reliability.md)."""
    pytest.importorskip("atheris")
    runs = subprocess.run(
        [sys.executable, __file__, "-atheris_runs=3000", "-max_len=512", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert runs.returncode == 0, runs.stderr[-3000:]
    assert "Done 3000" in runs.stderr


if __name__ == "__main__":
    main()
