"""The original sketch, rebuilt for comparison: stdlib http.server, `secret\\n{{...}}` bodies.

Run: python bench/original_design.py MODEL PORT TOKEN_FILE

MODEL is a ``.tflite`` file (run by a LiteRT interpreter behind a lock, as the sketch
did) or, where no TFLite file can be had, an ``.onnx`` file run by onnxruntime behind the
same lock. As our measurements of the original design found it: `HTTPServer` (one thread,
listen backlog 5), HTTP/1.0 (a new connection per request), the secret on the body's first
line, `ast.literal_eval` after turning braces into brackets, a short input zero-padded and
extra images ignored, Python float text back (`1e-05`), and 501 on any error. Only the
benchmark uses it.
"""

from __future__ import annotations

import ast
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np


def tflite_model(path: str):
    """predict(image [1, 28, 28]) -> logits [10], through a LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]["index"]
    exit_ = interpreter.get_output_details()[0]["index"]

    def predict(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(entry, image)
        interpreter.invoke()
        return interpreter.get_tensor(exit_)[0]

    return predict


def onnx_model(path: str):
    """predict(image [1, 28, 28]) -> logits [10], through onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})[0][0]


def main() -> None:
    model_path, port, token_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    predict = tflite_model(model_path) if model_path.endswith(".tflite") else onnx_model(model_path)
    lock = threading.Lock()  # the interpreter is not reentrant
    secret = Path(token_file).read_text().strip()

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
                with lock:
                    logits = predict(image)
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
