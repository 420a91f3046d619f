"""The HTTP transport: an ASGI app (Starlette) run by uvicorn."""
