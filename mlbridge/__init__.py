"""mlbridge: serve trained ML models to computer-algebra systems."""

__version__ = "0.1.0"

__all__ = ["__version__"]
