"""Training and export of the reference models (needs the training extra).

Importing this package imports no TensorFlow or Keras: ``commands`` and ``data`` stay light,
the other modules import Keras. To load a saved model holding the EvidenceTweakingLayer in a
fresh process, ``import mlbridge.training.layers`` first (it registers the layer with Keras).
"""
