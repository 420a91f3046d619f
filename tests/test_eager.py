"""mlbridge.eager: a coroutine runs at once, and as a task from where it first waits."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from mlbridge import eager

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="unset")


def run(main) -> None:
    asyncio.run(main())


async def start_from_a_callback(coroutine) -> asyncio.Task[None] | None:
    """``eager.start`` where the server calls it: in a callback of the loop, outside any task."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[asyncio.Task[None] | None] = loop.create_future()
    loop.call_soon(lambda: started.set_result(eager.start(coroutine, loop)))
    return await started


def test_a_coroutine_that_never_waits_runs_inside_start_and_makes_no_task() -> None:
    steps: list[str] = []

    async def request() -> None:
        steps.append("ran")

    async def main() -> None:
        before = len(asyncio.all_tasks())
        assert eager.start(request(), asyncio.get_running_loop()) is None
        assert steps == ["ran"]  # before any turn of the loop
        assert len(asyncio.all_tasks()) == before

    run(main)


def test_a_coroutine_that_waits_goes_on_as_a_task_with_the_futures_result() -> None:
    steps: list[object] = []

    async def request(future: asyncio.Future[int]) -> None:
        steps.append("before")
        steps.append(await future)
        await asyncio.sleep(0)  # a bare yield, then more waiting
        steps.append(await asyncio.sleep(0.001, result="after"))

    async def main() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = eager.start(request(future), asyncio.get_running_loop())
        assert task is not None and steps == ["before"]
        future.set_result(42)
        await task
        assert steps == ["before", 42, "after"]

    run(main)


def test_a_failed_future_raises_in_the_coroutine_where_it_waits() -> None:
    caught: list[BaseException] = []

    async def request(future: asyncio.Future[int]) -> None:
        try:
            await future
        except ValueError as error:
            caught.append(error)

    async def main() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = eager.start(request(future), asyncio.get_running_loop())
        assert task is not None
        future.set_exception(ValueError("bad model file"))
        await task
        assert [str(error) for error in caught] == ["bad model file"]

    run(main)


def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []

    async def request() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("finally ran")

    async def main() -> None:
        task = eager.start(request(), asyncio.get_running_loop())
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["finally ran"]

    run(main)


def test_a_cancellation_after_the_future_is_done_still_reaches_the_coroutine() -> None:
    seen: list[str] = []

    async def request(future: asyncio.Future[int]) -> None:
        await future
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = eager.start(request(future), asyncio.get_running_loop())
        assert task is not None
        future.set_result(1)
        task.cancel()  # the task is woken by the future, not waiting on it: cancelled next
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled"] or task.cancelled()

    run(main)


def test_an_error_in_the_first_step_reaches_the_caller() -> None:
    async def request() -> None:
        raise KeyError("oops")

    async def main() -> None:
        with pytest.raises(KeyError):
            eager.start(request(), asyncio.get_running_loop())

    run(main)


def test_own_task_gives_code_that_needs_one_a_task() -> None:
    seen: list[object] = []

    async def request() -> None:
        seen.append(asyncio.current_task())
        await eager.own_task()
        seen.append(asyncio.current_task())
        await eager.own_task()  # already in one: no turn of the loop
        seen.append(asyncio.current_task())

    async def main() -> None:
        task = await start_from_a_callback(request())
        assert task is not None
        await task
        assert seen == [None, task, task]

    run(main)


def test_anyio_threads_work_after_own_task() -> None:
    from anyio import to_thread

    async def request(results: list[int]) -> None:
        await eager.own_task()
        results.append(await to_thread.run_sync(lambda: 6 * 7))

    async def main() -> None:
        results: list[int] = []
        task = await start_from_a_callback(request(results))
        assert task is not None
        await task
        assert results == [42]

    run(main)


def test_context_variables_set_by_the_coroutine_stay_in_its_own_context() -> None:
    seen: list[str] = []

    async def request() -> None:
        MARK.set("request")
        await asyncio.sleep(0)
        seen.append(MARK.get())  # its task runs in the same context as its first step

    async def main() -> None:
        task = eager.start(request(), asyncio.get_running_loop())
        assert MARK.get() == "unset"  # not leaked to the caller (the protocol's callback)
        assert task is not None
        await task
        assert seen == ["request"]

    run(main)
