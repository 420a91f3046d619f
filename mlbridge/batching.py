"""Dynamic batching: concurrent requests for one model merged into one runtime call.

Each model with batching on has a :class:`Batcher`. A request that finds its batcher idle
leads: it yields to the event loop twice (so that requests that arrived with it can join),
waits up to ``max_delay_us`` for more while the batch is not full, then runs the batch on
its own task: the inputs concatenated along the batch axis, one runtime call, the outputs
split back by each request's row count. Requests that find a leader (or a drain) at work
queue and wait; what is still queued when the leader has its answer (requests that came
while its batch ran in a worker thread, or that did not fit) is drained by a task. A lone
request thus costs two turns of the event loop, no task and no wake-up of its own, and is
never delayed beyond ``max_delay_us``. Two kinds of request run at once, in a call of their
own, holding up no batch: one of ``max_batch_size`` rows or more, and one that nothing can
join (``may_have_company`` says no: the server has no other connection open, so the
sequential client of a notebook's loop pays no turns at all). Requests whose non-batch
shapes or datatypes differ run in separate calls. When a merged call fails, each of its requests is
run alone, so a request gets its own answer or its own error, never its batch-mate's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

Tensors = dict[str, np.ndarray]
Run = Callable[[Tensors], Awaitable[Tensors]]


def always() -> bool:
    return True


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
    """A request in a batcher's queue, and its outcome once its batch ran."""

    inputs: Tensors
    rows: int
    waiter: asyncio.Future[Tensors] | None = None  # how a queued request hears its outcome
    outcome: Tensors | BaseException | None = None  # the leader's (it waits on nothing)

    @cached_property
    def kind(self) -> tuple:
        """What must match for two requests to share a call: names, datatypes, example shapes
        (worked out only when a request has company)."""
        return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(self.inputs.items()))

    @property
    def settled(self) -> bool:
        return self.outcome is not None if self.waiter is None else self.waiter.done()

    def settle(self, outcome: Tensors | BaseException) -> None:
        """Give the request its result or error (the first one given stands)."""
        if self.settled:
            return
        if self.waiter is None:
            self.outcome = outcome
        elif isinstance(outcome, BaseException):
            self.waiter.set_exception(outcome)
        else:
            self.waiter.set_result(outcome)


class Batcher:
    """Merges the concurrent requests of one model (see the module docstring)."""

    def __init__(
        self,
        policy: BatchPolicy,
        run: Run,
        on_batch: Callable[[int, int], None] | None = None,
        may_have_company: Callable[[], bool] = always,
    ) -> None:
        self.policy = policy
        self._run = run
        self._on_batch = on_batch  # told (rows, requests still waiting) at each runtime call
        self._may_have_company = may_have_company  # False: no other request can come now
        self._queue: list[_Pending] = []
        self._busy = False  # a leader or the drain task is gathering or running batches
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps weak references
        self.batches = 0  # runtime calls made
        self.requests = 0  # requests they answered
        self.rows = 0  # examples they computed

    async def submit(self, inputs: Tensors) -> Tensors:
        """Run ``inputs`` (every tensor with a leading batch axis) in the next batch."""
        rows = next(iter(inputs.values())).shape[0]
        pending = _Pending(inputs, rows)
        if rows >= self.policy.max_batch_size or not self._may_have_company():
            # a batch of its own: it waits for no other
            self._count([pending])
            return await self._run(inputs)
        self._queue.append(pending)
        if self._busy:
            pending.waiter = asyncio.get_running_loop().create_future()
            return await pending.waiter
        self._busy = True
        return await self._lead(pending)

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0

    async def _lead(self, own: _Pending) -> Tensors:
        """Run the batch that holds ``own`` (the oldest request) on this task; hand on the rest."""
        try:
            await self._gather()
            if len(self._queue) == 1:  # still alone: run it as it came
                self._queue.clear()
                self._count([own])
                return await self._run(own.inputs)
            await self._run_guarded(self._take())
        except BaseException:
            if own in self._queue:  # interrupted while gathering: the others go on without it
                self._queue.remove(own)
            raise
        finally:
            self._hand_on()
        if isinstance(own.outcome, BaseException):
            raise own.outcome
        assert own.outcome is not None  # its batch ran
        return own.outcome

    def _hand_on(self) -> None:
        """Drain what is still queued in a task of its own, or go idle."""
        if self._queue:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._gather()
                await self._run_guarded(self._take())
        finally:
            self._busy = False

    async def _run_guarded(self, batch: list[_Pending]) -> None:
        try:
            await self._run_batch(batch)
        except BaseException as error:  # never leave a request waiting forever
            for pending in batch:
                pending.settle(error)
            raise

    async def _gather(self) -> None:
        """Let requests that arrived together join; wait up to the delay for a full batch.

        Two turns of the event loop: the first lets in the requests already read, the second
        those that the next read of the sockets brings (with one, 8 clients made batches of
        ~3.5 instead of ~7, and fewer requests per second).
        """
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await self._wait_for_more()

    async def _wait_for_more(self) -> None:
        """Wait up to the delay while the batch is not full."""
        if not self.policy.max_delay_us:
            return
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
            if pending.kind == first.kind and fits:
                batch.append(pending)
                rows += pending.rows
            else:
                waiting.append(pending)
        self._queue = waiting
        return batch

    def _count(self, batch: list[_Pending]) -> None:
        """Count one runtime call for ``batch`` (and tell the observer)."""
        self.batches += 1
        self.requests += len(batch)
        rows = sum(p.rows for p in batch)
        self.rows += rows
        if self._on_batch is not None:
            self._on_batch(rows, len(self._queue))

    async def _run_batch(self, batch: list[_Pending]) -> None:
        self._count(batch)
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
            pending.settle({name: out[mine] for name, out in outputs.items()})
            start += pending.rows


async def _settle(pending: _Pending, result: Awaitable[Tensors]) -> None:
    try:
        outputs = await result
    except Exception as error:
        pending.settle(error)
        return
    pending.settle(outputs)
