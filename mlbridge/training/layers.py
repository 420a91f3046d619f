"""The EvidenceTweakingLayer, for training code; it lives in :mod:`mlbridge.runtimes.keras_layers`.

Importing this module registers the layer with Keras, as it always did.
"""

from __future__ import annotations

from ..runtimes.keras_layers import SQUASHES, EvidenceTweakingLayer, asinh, atan, squash

__all__ = ["SQUASHES", "EvidenceTweakingLayer", "asinh", "atan", "squash"]
