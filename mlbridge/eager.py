"""Run a coroutine at once, in the caller's callback, and give it a task only if it waits.

asyncio runs every coroutine as a task: created, registered in its set of tasks (a
``WeakSet`` in Python 3.11), stepped on a later turn of the event loop, then unregistered
through callbacks. For a request that needs nothing but the CPU (a small model run inline,
a reply written to a socket with room for it), that bookkeeping is a real share of its
cost. :func:`start` runs the coroutine's first step at once; if it finishes there, no task
was made. If it waits, on a future or a bare ``yield`` (``asyncio.sleep(0)``), the rest
runs as a task that resumes it exactly where it waits (Python 3.12's eager tasks, which
3.11 lacks).

Until it first waits, the coroutine has no task of its own: ``asyncio.current_task()`` is
None there. Code that needs one (anyio's threads and cancel scopes, and so any of
Starlette's routes) awaits :func:`own_task` first.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any


def start(
    coroutine: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop
) -> asyncio.Task[None] | None:
    """Run ``coroutine`` until it finishes (None) or waits (the task that finishes it)."""
    context = contextvars.copy_context()  # its own, as a task's would be
    try:
        waiting_on = context.run(coroutine.send, None)
    except StopIteration:
        return None
    return loop.create_task(_resume(coroutine, waiting_on), context=context)


async def _resume(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Step ``coroutine`` on from where it waits on ``waiting_on`` (a future, or None for a
    bare yield), as its task would: this task's own cancellation is passed on to it."""
    while True:
        thrown: BaseException | None = None
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False  # it was yielded, not to a task
                await waiting_on
        except asyncio.CancelledError as cancelled:
            if waiting_on is None or not waiting_on.cancelled():
                thrown = cancelled  # this task was cancelled, not the future: pass it on
        except BaseException:
            pass  # the future failed: the coroutine reads how, as it reads a result
        try:
            waiting_on = coroutine.send(None) if thrown is None else coroutine.throw(thrown)
        except StopIteration:
            return


async def own_task() -> None:
    """Return inside a task: at once if already in one, else after one turn of the loop
    (the rest of a coroutine :func:`start` ran then runs in the task that resumes it)."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)
