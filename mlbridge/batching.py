"""Dynamic batching: concurrent requests for one model merged into one runtime call.

Each model with batching on has a :class:`Batcher`. A request joins its queue; the first
request of a burst schedules a drain, which yields to the event loop once (so requests
that arrived together can join), waits up to ``max_delay_us`` for more while the batch is
not full, then runs the batch: the inputs concatenated along the batch axis, one runtime
call, the outputs split back by each request's row count. A lone request is never delayed
beyond ``max_delay_us`` (with the default 0, only by one turn of the event loop). Requests
whose non-batch shapes or datatypes differ run in separate calls. When a merged call fails,
each of its requests is run alone, so a request gets its own answer or its own error, never
its batch-mate's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

Tensors = dict[str, np.ndarray]
Run = Callable[[Tensors], Awaitable[Tensors]]


@dataclass(frozen=True)
class BatchPolicy:
    """How one model batches: at most ``max_batch_size`` rows, waiting at most ``max_delay_us``."""

    max_batch_size: int = 0  # rows; 0 or 1 = batching off
    max_delay_us: int = 0

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


NO_BATCHING = BatchPolicy()


@dataclass(eq=False)  # identity: two requests with equal tensors are still two
class _Pending:
    inputs: Tensors
    rows: int
    done: asyncio.Future[Tensors]
    key: tuple = field(default=())


class Batcher:
    """Merges the concurrent requests of one model (see the module docstring)."""

    def __init__(
        self, policy: BatchPolicy, run: Run, on_batch: Callable[[int, int], None] | None = None
    ) -> None:
        self.policy = policy
        self._run = run
        self._on_batch = on_batch  # told (rows, requests still waiting) at each runtime call
        self._queue: list[_Pending] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps weak references
        self.batches = 0  # runtime calls made
        self.requests = 0  # requests they answered
        self.rows = 0  # examples they computed

    async def submit(self, inputs: Tensors) -> Tensors:
        """Run ``inputs`` (every tensor with a leading batch axis) in the next batch."""
        loop = asyncio.get_running_loop()
        rows = next(iter(inputs.values())).shape[0]
        key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))
        pending = _Pending(inputs, rows, loop.create_future(), key)
        self._queue.append(pending)
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        return await pending.done

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._gather()
                batch = self._take()
                try:
                    await self._run_batch(batch)
                except BaseException as error:  # never leave a request waiting forever
                    for pending in batch:
                        if not pending.done.done():
                            pending.done.set_exception(error)
                    raise
        finally:
            self._draining = False

    async def _gather(self) -> None:
        """Let requests that arrived together join; wait up to the delay for a full batch."""
        await asyncio.sleep(0)
        deadline = asyncio.get_running_loop().time() + self.policy.max_delay_us / 1e6
        while self._rows() < self.policy.max_batch_size:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 50e-6))

    def _rows(self) -> int:
        return sum(p.rows for p in self._queue)

    def _take(self) -> list[_Pending]:
        """The oldest request and every later one of the same kind that still fits."""
        first = self._queue[0]
        batch: list[_Pending] = []
        waiting: list[_Pending] = []
        rows = 0
        for pending in self._queue:
            fits = rows + pending.rows <= self.policy.max_batch_size or not batch
            if pending.key == first.key and fits:
                batch.append(pending)
                rows += pending.rows
            else:
                waiting.append(pending)
        self._queue = waiting
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        self.batches += 1
        self.requests += len(batch)
        rows = sum(p.rows for p in batch)
        self.rows += rows
        if self._on_batch is not None:
            self._on_batch(rows, len(self._queue))
        if len(batch) == 1:
            await _settle(batch[0], self._run(batch[0].inputs))
            return
        merged = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        try:
            outputs = await self._run(merged)
        except Exception:  # some request of the batch is bad: give each its own fate
            for pending in batch:
                await _settle(pending, self._run(pending.inputs))
            return
        start = 0
        for pending in batch:
            mine = slice(start, start + pending.rows)
            if not pending.done.done():
                pending.done.set_result({name: out[mine] for name, out in outputs.items()})
            start += pending.rows


async def _settle(pending: _Pending, result: Awaitable[Tensors]) -> None:
    try:
        outputs = await result
    except Exception as error:
        if not pending.done.done():
            pending.done.set_exception(error)
        return
    if not pending.done.done():
        pending.done.set_result(outputs)
