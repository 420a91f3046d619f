"""The original sketch, rebuilt for comparison: stdlib http.server, `secret\\n{{...}}` bodies.

Run: python bench/original_design.py MODEL.onnx PORT TOKEN_FILE
It parses with ast.literal_eval, answers Python float text, and 501 on any error,
as our measurements of the original design found it. Only the benchmark uses it.
"""

from __future__ import annotations

import ast
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import onnxruntime


def main() -> None:
    model_path, port, token_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    secret = Path(token_file).read_text().strip()
    name = session.get_inputs()[0].name

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                first, _, data = body.partition("\n")
                assert first.strip() == secret
                image = np.zeros((1, 28, 28), np.float32)
                values = np.asarray(
                    ast.literal_eval(data.replace("{", "[").replace("}", "]")), np.float32
                )
                image.flat[: values.size] = values.flat[:784]
                logits = session.run(None, {name: image})[0][0]
                reply = ("{" + ", ".join(str(float(v)) for v in logits) + "}").encode()
                self.send_response(200)
            except Exception:
                reply = b"error"
                self.send_response(501)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
