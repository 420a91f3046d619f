"""Training and export of the reference models (needs the training extra)."""
