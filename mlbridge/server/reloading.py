"""Hot reload: a model's files loaded again and swapped in, on request or when they change.

The new files load in a worker thread; the swap happens on the event loop in one step,
so a request sees the old model or the new one, never a mix, and requests holding the old
one finish on it. A reload that fails leaves the old model serving; its error is shown on
the model's ready and metadata routes until a reload succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from anyio import to_thread

from ..registry import ModelRegistry

log = logging.getLogger("mlbridge")
logging.getLogger("watchfiles").setLevel(logging.WARNING)  # "1 change detected" per change
WATCH_DEBOUNCE_MS = 200


class Reloader:
    """Reloads models of one registry; tells ``on_change`` when the served names change."""

    def __init__(
        self, registry: ModelRegistry, on_change: Callable[[list[str]], None] | None = None
    ) -> None:
        self.registry = registry
        self.on_change = on_change
        self.reloads = 0

    async def reload(self, name: str) -> list[str]:
        """Load ``name`` again and swap it in; return the names served now (raises on failure)."""
        models = await to_thread.run_sync(self.registry.load_again, name)
        before = self.registry.names()
        self.registry.install(models)
        self.reloads += 1
        log.info("reloaded %s from %s", name, models[0].path)
        after = self.registry.names()
        if after != before and self.on_change is not None:
            self.on_change(after)
        return after

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload each model whose model, config or gradient file changes, until ``stop``."""
        from watchfiles import awatch

        files = self.registry.sources()
        folders = sorted({str(path.parent) for path in files})
        async for changes in awatch(
            *folders, stop_event=stop, debounce=WATCH_DEBOUNCE_MS, step=50, recursive=False
        ):
            names = {files[Path(p).resolve()] for _, p in changes if Path(p).resolve() in files}
            for name in sorted(names):
                try:
                    await self.reload(name)
                except Exception as error:  # the old model keeps serving; the error is shown
                    log.error("could not reload %s: %s", name, error)
