"""Plain JAX functions served as ONNX with their gradients; JAX is needed only to export them."""
