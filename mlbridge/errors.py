"""Every error mlbridge reports to a caller.

Each class carries the HTTP status it maps to and a stable ``code`` that
clients can branch on. The tree::

    MLBridgeError                 base; never raised itself
    ├── BadRequest        400     the request is malformed
    │   ├── PayloadError  400     the body could not be parsed (says where)
    │   ├── ShapeMismatch 400     a tensor's shape does not fit the signature
    │   ├── DatatypeMismatch 400  a tensor's datatype does not fit the signature
    │   └── InputNameMismatch 400 the inputs are not the ones the model declares
    ├── Unauthorized      401     the secret is missing or wrong
    ├── ModelNotFound     404     no model of that name is served
    ├── RouteNotFound     404     no endpoint at that path
    ├── MethodNotAllowed  405     the endpoint exists but not for that method
    ├── PayloadTooLarge   413     the body exceeds the configured limit
    ├── GradientUnavailable 422   the model serves no gradient (the message says why)
    ├── ReloadFailed      422     a model's new files did not load; the old model serves on
    ├── ServerBusy        503     the body budget or the inference queue is full (Retry-After)
    ├── ModelLoadError    500     a model file could not be loaded (start-up only)
    ├── InferenceFailed   500     the runtime failed on valid input
    └── ConfigError       --      bad settings, arguments or files (CLI: one line)
        ├── MissingDependency --  an optional extra is needed but not installed
        ├── ExportCheckFailed --  an exported file disagrees with its source
        └── DataNotFound  --      a data set file or folder is missing
"""

from __future__ import annotations


class MLBridgeError(Exception):
    """Base class: an error with an HTTP status and a stable code."""

    status = 500
    code = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(MLBridgeError):
    """Raised when a request is malformed in a way no subclass names."""

    status = 400
    code = "BadRequest"


class PayloadError(BadRequest):
    """Raised when a body cannot be parsed; the message says where."""

    code = "PayloadError"


class ShapeMismatch(BadRequest):
    """Raised when a tensor's shape does not fit the model's signature."""

    code = "ShapeMismatch"


class DatatypeMismatch(BadRequest):
    """Raised when a tensor's datatype does not fit the model's signature."""

    code = "DatatypeMismatch"


class InputNameMismatch(BadRequest):
    """Raised when request inputs do not match the declared input names."""

    code = "InputNameMismatch"


class Unauthorized(MLBridgeError):
    """Raised when a request lacks the secret or carries a wrong one."""

    status = 401
    code = "Unauthorized"


class ModelNotFound(MLBridgeError):
    """Raised when a request names a model the server does not serve."""

    status = 404
    code = "ModelNotFound"


class RouteNotFound(MLBridgeError):
    """Raised when no endpoint matches the request's path."""

    status = 404
    code = "RouteNotFound"


class MethodNotAllowed(MLBridgeError):
    """Raised when the path exists but not for the request's method."""

    status = 405
    code = "MethodNotAllowed"


class PayloadTooLarge(MLBridgeError):
    """Raised when a body is larger than the configured limit."""

    status = 413
    code = "PayloadTooLarge"


class GradientUnavailable(MLBridgeError):
    """Raised when a model's gradient is asked for but cannot be served; says why."""

    status = 422
    code = "GradientUnavailable"


class ReloadFailed(MLBridgeError):
    """Raised when a reload cannot load a model's new files; the old model keeps serving."""

    status = 422
    code = "ReloadFailed"


class ServerBusy(MLBridgeError):
    """Raised when the bodies in flight or the requests waiting for inference are at their
    limit; the reply says when to retry (``Retry-After``)."""

    status = 503
    code = "ServerBusy"
    retry_after_s = 1


class ModelLoadError(MLBridgeError):
    """Raised at start-up when a model file cannot be loaded."""

    code = "ModelLoadError"


class InferenceFailed(MLBridgeError):
    """Raised when a runtime fails on input that passed validation."""

    code = "InferenceFailed"


class ConfigError(MLBridgeError):
    """Raised for bad settings, paths or files; the CLI prints it as one line."""

    code = "ConfigError"


class MissingDependency(ConfigError):
    """Raised when an optional extra is needed but not installed."""

    code = "MissingDependency"

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        target = f"mlbridge[{extra}]" if extra else "mlbridge"  # "" = a core dependency
        super().__init__(f"{purpose} needs the '{package}' package: pip install '{target}'")


class DataNotFound(ConfigError):
    """Raised when a data set's file or folder is missing."""

    code = "DataNotFound"


class ExportCheckFailed(ConfigError):
    """Raised when an exported file disagrees with its source or cannot run in its runtime."""

    code = "ExportCheckFailed"
