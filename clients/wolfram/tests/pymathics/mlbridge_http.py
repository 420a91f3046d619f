"""Test-only Mathics3 module: one builtin that does a real HTTP exchange through Python.

Mathics3 has no URLRead/HTTPRequest; `http_standin.wl` builds those two on top of
`HTTPExchange`, which really goes over a socket (urllib). Never used by the package itself.
Load with `LoadModule["pymathics.mlbridge_http"]` (this folder on PYTHONPATH).
"""

from __future__ import annotations

import io
import json
import subprocess
import urllib.error
import urllib.request

from mathics.core.atoms import ByteArray, Integer, Real, String
from mathics.core.builtin import Builtin
from mathics.core.expression import Expression
from mathics.core.list import ListExpression
from mathics.core.parser import MathicsFileLineFeeder
from mathics.core.parser.convert import convert
from mathics.core.parser.util import parser
from mathics.core.symbols import Symbol, SymbolFalse, SymbolNull, SymbolTrue
from mathics_scanner.errors import SyntaxError as MathicsSyntaxError

TIMEOUT_S = 30

pymathics_version_data = {"author": "mlbridge tests", "version": "0", "name": "mlbridge_http"}


def _exchange(method: str, url: str, headers: dict[str, str], body: bytes | None):
    """Send one request; return (status, content type, body bytes); status 0 when unreachable."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()
    except OSError as error:
        return 0, "", str(error).encode()


class HTTPExchange(Builtin):
    """
    <dl>
      <dt>'HTTPExchange'[$method$, $url$, {{$name$, $value$}, ...}, $body$]
      <dd>sends one HTTP request; gives {status, content type, body text, body ByteArray}.
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
        status, content_type, data = _exchange(method.value, url.value, fields, payload)
        text = String(data.decode("utf-8", errors="replace"))
        return ListExpression(
            Integer(status), String(content_type), text, ByteArray(bytearray(data))
        )


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
      <dt>'RunArgv'[{$program$, $arg$, ...}]
      <dd>runs a program without a shell; gives {exit code, stdout, stderr}.
    </dl>
    """

    summary_text = "run a program and wait for it (test-only)"

    def eval(self, argv, evaluation):
        "RunArgv[argv_List]"
        words = [element.value for element in argv.elements]
        done = subprocess.run(words, capture_output=True, text=True, timeout=TIMEOUT_S * 4)
        return ListExpression(Integer(done.returncode), String(done.stdout), String(done.stderr))
