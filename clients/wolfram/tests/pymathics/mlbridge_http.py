"""Test-only Mathics3 module: the Wolfram built-ins MLBridge needs that Mathics3 lacks.

Each builtin here does in Python what the documented Wolfram function does, as far as the
package and its tests depend on it; `standin.wl` wraps them under the real names. Never
used by the package itself. Load with `LoadModule["pymathics.mlbridge_http"]` (the folder
above on PYTHONPATH).

- HTTPExchange: one HTTP request over a real socket, with URLRead's default headers
  (libcurl's ``Accept: */*``, a Wolfram user agent) and the reply body decoded by the
  charset its Content-Type names, ISO-8859-1 when it names none (bytes as characters):
  what ``URLRead[..., "Body"]`` gives, and why the package reads ``"BodyByteArray"``.
- WXFSerialize/WXFDeserialize: BinarySerialize/BinaryDeserialize (see wxf_standin.py).
- MakeNumericArray/NumericArrayNormal: NumericArray as an atom, and its Normal.
- BytesToText: ByteArrayToString (UTF-8; an invalid byte stands for its own code point).
- RawJSONString, HeldParse, RunArgv: ImportString[..., "RawJSON"], a ToExpression that
  holds, RunProcess (with ProcessEnvironment merged into the inherited environment, and
  standard input).
- BitwiseXor, UnixSeconds, RandomBytes: BitXor, UnixTime[], GenerateSymmetricKey's key bytes.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
from mathics.core.atoms import ByteArray, Integer, NumericArray, Real, String
from mathics.core.builtin import Builtin
from mathics.core.convert.python import from_python
from mathics.core.expression import Expression
from mathics.core.list import ListExpression
from mathics.core.parser import MathicsFileLineFeeder
from mathics.core.parser.convert import convert
from mathics.core.parser.util import parser
from mathics.core.symbols import Symbol, SymbolFalse, SymbolNull, SymbolTrue
from mathics_scanner.errors import SyntaxError as MathicsSyntaxError
from pymathics import wxf_standin

TIMEOUT_S = 30
DEFAULT_HEADERS = {"Accept": "*/*", "User-Agent": "Wolfram HTTPClient (mlbridge test stand-in)"}
DEFAULT_CHARSET = "iso-8859-1"  # no charset named: one character per byte
CHARSET = re.compile(r"charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)
ARRAY_TYPES = {"Real32": np.float32, "Real64": np.float64, "Integer32": np.int32}
ARRAY_TYPES |= {"Integer64": np.int64, "UnsignedInteger8": np.uint8}

# Mathics3's NumericArray atom names its head without a context; the Wolfram Language's is
# System`NumericArray, which is what patterns such as _NumericArray must match.
NumericArray.class_head_name = "System`NumericArray"
codecs.register_error("mlbridge_codepoint", lambda e: (chr(e.object[e.start]), e.start + 1))

pymathics_version_data = {"author": "mlbridge tests", "version": "0", "name": "mlbridge_http"}


def _exchange(method: str, url: str, headers: dict[str, str], body: bytes | None):
    """Send one request (no proxy); (status, content type, body, reason); status 0: no answer."""
    wanted = {k.lower() for k in headers}
    fields = {k: v for k, v in DEFAULT_HEADERS.items() if k.lower() not in wanted} | headers
    request = urllib.request.Request(url, data=body, headers=fields, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT_S) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read(), ""
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read(), ""
    except OSError as error:
        return 0, "", b"", str(getattr(error, "reason", error))


def _body_text(data: bytes, content_type: str) -> str:
    """The body as URLRead's "Body" gives it: decoded by the charset the reply names."""
    named = CHARSET.search(content_type)
    try:
        return data.decode(named.group(1) if named else DEFAULT_CHARSET, errors="replace")
    except LookupError:
        return data.decode(DEFAULT_CHARSET)


class HTTPExchange(Builtin):
    """
    <dl>
      <dt>'HTTPExchange'[$method$, $url$, {{$name$, $value$}, ...}, $body$]
      <dd>sends one HTTP request; gives {status, content type, body text, body ByteArray,
      reason}; status 0 and the reason when no server answered.
    </dl>
    """

    summary_text = "send one HTTP request through Python (test-only)"

    def eval(self, method, url, headers, body, evaluation):
        "HTTPExchange[method_String, url_String, headers_List, body_]"
        if isinstance(body, ByteArray):
            payload: bytes | None = bytes(body.value)
        elif isinstance(body, String):
            payload = body.value.encode("utf-8")
        else:
            payload = None
        fields = {pair.elements[0].value: pair.elements[1].value for pair in headers.elements}
        status, content_type, data, reason = _exchange(method.value, url.value, fields, payload)
        return ListExpression(
            Integer(status),
            String(content_type),
            String(_body_text(data, content_type)),
            ByteArray(bytearray(data)),
            String(reason),
        )


class BytesToText(Builtin):
    """
    <dl>
      <dt>'BytesToText'[$bytes$]
      <dd>decodes a ByteArray as UTF-8, as ByteArrayToString does.
    </dl>
    """

    summary_text = "decode UTF-8 bytes (test-only)"

    def eval(self, data, evaluation):
        "BytesToText[data_]"
        if not isinstance(data, ByteArray):
            return None
        return String(bytes(data.value).decode("utf-8", errors="mlbridge_codepoint"))


class WXFSerialize(Builtin):
    """
    <dl>
      <dt>'WXFSerialize'[$expr$]
      <dd>gives the WXF bytes of $expr$ as a ByteArray, as BinarySerialize does.
    </dl>
    """

    summary_text = "BinarySerialize (test-only)"

    def eval(self, expr, evaluation):
        "WXFSerialize[expr_]"
        try:
            return ByteArray(bytearray(wxf_standin.serialize(expr)))
        except wxf_standin.WXFError as error:
            evaluation.message("BinarySerialize", "wxf", String(str(error)))
            return Symbol("System`$Failed")


class WXFDeserialize(Builtin):
    """
    <dl>
      <dt>'WXFDeserialize'[$bytes$, $head$]
      <dd>reads WXF bytes; gives the expression wrapped in $head$ before it is evaluated.
    </dl>
    """

    summary_text = "BinaryDeserialize (test-only)"

    def eval(self, data, head, evaluation):
        "WXFDeserialize[data_, head_]"
        if not isinstance(data, ByteArray):
            return None
        try:
            return Expression(head, wxf_standin.deserialize(bytes(data.value)))
        except (wxf_standin.WXFError, ValueError, UnicodeDecodeError) as error:
            evaluation.message("BinaryDeserialize", "corrupt", String(str(error)))
            return Symbol("System`$Failed")


class MakeNumericArray(Builtin):
    """
    <dl>
      <dt>'MakeNumericArray'[$list$, $type$]
      <dd>a NumericArray atom of element type $type$ (e.g. "Real32") holding $list$.
    </dl>
    """

    summary_text = "NumericArray (test-only)"

    def eval(self, data, kind, evaluation):
        "MakeNumericArray[data_, kind_String]"
        try:
            values = _numbers(data)
        except TypeError:
            return None
        if kind.value not in ARRAY_TYPES:
            return None
        return NumericArray(np.asarray(values, dtype=ARRAY_TYPES[kind.value]))


class NumericArrayNormal(Builtin):
    """
    <dl>
      <dt>'NumericArrayNormal'[$array$]
      <dd>the nested list of numbers a NumericArray holds, as Normal gives it.
    </dl>
    """

    summary_text = "Normal of a NumericArray (test-only)"

    def eval(self, array, evaluation):
        "NumericArrayNormal[array_]"
        if not isinstance(array, NumericArray):
            return None
        values = array.value.tolist()
        return _with_specials(values)


def _numbers(expr):
    """A nested list of machine numbers as nested Python lists; TypeError for anything else."""
    if isinstance(expr, (Integer, Real)):
        return expr.value
    if expr.has_form("List", None):
        return [_numbers(element) for element in expr.elements]
    raise TypeError("not a list of numbers")


def _with_specials(value):
    """Numbers to Mathics3, NaN and infinities as Indeterminate and DirectedInfinity[+-1]."""
    if isinstance(value, list):
        return ListExpression(*[_with_specials(v) for v in value])
    if isinstance(value, float) and value != value:
        return Symbol("System`Indeterminate")
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return Expression(Symbol("System`DirectedInfinity"), Integer(1 if value > 0 else -1))
    return from_python(value)


def _to_mathics(value):
    """JSON value -> Mathics3 expression, objects as Associations (what "RawJSON" gives)."""
    if isinstance(value, dict):
        rules = [
            Expression(Symbol("System`Rule"), String(k), _to_mathics(v)) for k, v in value.items()
        ]
        return Expression(Symbol("System`Association"), *rules)
    if isinstance(value, list):
        return ListExpression(*[_to_mathics(v) for v in value])
    if isinstance(value, bool):
        return SymbolTrue if value else SymbolFalse
    if isinstance(value, int):
        return Integer(value)
    if isinstance(value, float):
        return Real(value)
    if value is None:
        return SymbolNull
    return String(value)


class RawJSONString(Builtin):
    """
    <dl>
      <dt>'RawJSONString'[$text$]
      <dd>parses JSON text into Associations and lists; $Failed when it is not JSON.
    </dl>
    """

    summary_text = "parse JSON text into Associations (test-only)"

    def eval(self, text, evaluation):
        "RawJSONString[text_String]"
        try:
            return _to_mathics(json.loads(text.value))
        except ValueError:
            return Symbol("System`$Failed")


class HeldParse(Builtin):
    """
    <dl>
      <dt>'HeldParse'[$text$, $head$]
      <dd>parses InputForm $text$ and wraps it in $head$ without evaluating it; $Failed on
      a syntax error.
    </dl>
    """

    summary_text = "parse text without evaluating it (test-only)"

    def eval(self, text, head, evaluation):
        "HeldParse[text_String, head_Symbol]"
        source = io.StringIO(text.value)
        source.name = "HeldParse"  # the feeder names its source in syntax messages
        feeder = MathicsFileLineFeeder(source)
        parsed = []
        try:
            while not feeder.empty():
                ast = parser.parse(feeder)
                if ast is not None:
                    parsed.append(ast)
        except MathicsSyntaxError:
            return Symbol("System`$Failed")
        if len(parsed) != 1:  # like ToExpression, one expression or none at all
            return Symbol("System`$Failed")
        return Expression(head, convert(parsed[0], evaluation.definitions))


class RunArgv(Builtin):
    """
    <dl>
      <dt>'RunArgv'[{$program$, $arg$, ...}, {{$name$, $value$}, ...}]
      <dd>runs a program without a shell, with the variables set on top of the inherited
      environment; gives {exit code, stdout, stderr}.
    </dl>
    """

    summary_text = "run a program and wait for it (test-only)"

    def eval(self, argv, variables, stdin, evaluation):
        "RunArgv[argv_List, variables_List, stdin_]"
        words = [element.value for element in argv.elements]
        pairs = [(pair.elements[0].value, pair.elements[1].value) for pair in variables.elements]
        env = {**os.environ, **dict(pairs)}
        given = stdin.value if isinstance(stdin, String) else None
        try:
            done = subprocess.run(
                words, env=env, input=given, capture_output=True, text=True, timeout=TIMEOUT_S * 4
            )
        except OSError:
            return Symbol("System`$Failed")
        return ListExpression(Integer(done.returncode), String(done.stdout), String(done.stderr))


class BitwiseXor(Builtin):
    """
    <dl>
      <dt>'BitwiseXor'[$a$, $b$]
      <dd>the bitwise exclusive or of two non-negative integers, as BitXor gives it.
    </dl>
    """

    summary_text = "BitXor (test-only)"

    def eval(self, a, b, evaluation):
        "BitwiseXor[a_Integer, b_Integer]"
        return Integer(a.value ^ b.value)


class UnixSeconds(Builtin):
    """
    <dl>
      <dt>'UnixSeconds'[]
      <dd>whole seconds since 1970-01-01 UTC, as UnixTime[] gives them.
    </dl>
    """

    summary_text = "UnixTime (test-only)"

    def eval(self, evaluation):
        "UnixSeconds[]"
        return Integer(int(time.time()))


class RandomBytes(Builtin):
    """
    <dl>
      <dt>'RandomBytes'[$n$]
      <dd>a ByteArray of $n$ bytes from the system's CSPRNG.
    </dl>
    """

    summary_text = "random key bytes (test-only)"

    def eval(self, n, evaluation):
        "RandomBytes[n_Integer]"
        return ByteArray(bytearray(secrets.token_bytes(n.value)))
