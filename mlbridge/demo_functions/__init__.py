"""Plain JAX functions bundled as demos; `make demo-functions` exports them to demo_models/."""
