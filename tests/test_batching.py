"""Dynamic batching: requests merged under concurrency, each result back to its own request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mlbridge.batching import Batcher, BatchPolicy
from mlbridge.errors import InferenceFailed

Tensors = dict[str, np.ndarray]


class Recorder:
    """A runtime stand-in: y = 2x + 1 per row; refuses any batch holding a negative value."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.calls.append(len(x))
        await asyncio.sleep(0.001)  # a runtime call takes time: others queue meanwhile
        if (x < 0).any():
            raise InferenceFailed("negative input")
        return {"y": 2 * x + 1, "sum": x.sum(axis=1)}


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows() -> None:
    recorder = Recorder()
    batcher = Batcher(BatchPolicy(max_batch_size=16), recorder)
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) ** 2 for i in range(40)]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(batcher.submit({"x": x}) for x in requests))

    results = run(main())
    for x, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], 2 * x + 1)
        np.testing.assert_array_equal(result["sum"], x.sum(axis=1))
    assert sum(recorder.calls) == sum(len(x) for x in requests)
    assert max(recorder.calls) <= 16
    assert len(recorder.calls) < len(requests) and batcher.mean_batch_size > 1


def test_a_failing_batch_mate_does_not_take_the_others_down() -> None:
    recorder = Recorder()
    batcher = Batcher(BatchPolicy(max_batch_size=8), recorder)
    good = [np.full((1, 2), float(i), np.float32) for i in range(6)]
    bad = np.full((1, 2), -1.0, np.float32)

    async def main() -> list[object]:
        submissions = [batcher.submit({"x": x}) for x in (*good[:3], bad, *good[3:])]
        return await asyncio.gather(*submissions, return_exceptions=True)

    results = run(main())
    assert isinstance(results[3], InferenceFailed)
    answers = [r for i, r in enumerate(results) if i != 3]
    for x, answer in zip(good, answers):
        assert isinstance(answer, dict)
        np.testing.assert_array_equal(answer["y"], 2 * x + 1)


def test_requests_of_different_shapes_run_in_separate_calls() -> None:
    recorder = Recorder()
    batcher = Batcher(BatchPolicy(max_batch_size=8), recorder)

    async def main() -> list[Tensors]:
        shapes = [(1, 2), (1, 3), (1, 2), (1, 3)]
        return await asyncio.gather(
            *(batcher.submit({"x": np.ones(shape, np.float32)}) for shape in shapes)
        )

    results = run(main())
    assert [r["y"].shape for r in results] == [(1, 2), (1, 3), (1, 2), (1, 3)]
    assert sorted(recorder.calls) == [2, 2]


def test_a_lone_request_runs_at_once_and_a_big_one_alone() -> None:
    recorder = Recorder()
    batcher = Batcher(BatchPolicy(max_batch_size=4, max_delay_us=0), recorder)
    result = run(batcher.submit({"x": np.ones((10, 2), np.float32)}))
    assert result["y"].shape == (10, 2) and recorder.calls == [10]


def test_a_lone_request_runs_on_its_own_task() -> None:
    tasks = []

    async def runtime(inputs: Tensors) -> Tensors:
        tasks.append(asyncio.current_task())
        return {"y": inputs["x"] + 1}

    batcher = Batcher(BatchPolicy(max_batch_size=8), runtime)

    async def main() -> tuple[Tensors, object]:
        return await batcher.submit({"x": np.zeros((1, 2), np.float32)}), asyncio.current_task()

    result, submitter = run(main())
    np.testing.assert_array_equal(result["y"], np.ones((1, 2)))
    assert tasks == [submitter]


def test_a_request_nothing_can_join_runs_at_once_without_a_turn_of_the_loop() -> None:
    recorder = Recorder()
    batcher = Batcher(BatchPolicy(max_batch_size=8), recorder, may_have_company=lambda: False)

    async def one() -> bool:
        turned = asyncio.Event()
        asyncio.get_running_loop().call_soon(turned.set)

        async def instant(inputs: Tensors) -> Tensors:  # a runtime that never yields
            return {"y": inputs["x"] + 1}

        alone = Batcher(BatchPolicy(max_batch_size=8), instant, may_have_company=lambda: False)
        await alone.submit({"x": np.zeros((1, 2), np.float32)})
        return turned.is_set()

    assert run(one()) is False  # the callback scheduled before it has not run yet

    async def several() -> list[Tensors]:
        xs = [np.full((1, 2), float(i), np.float32) for i in range(4)]
        return await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))

    results = run(several())
    assert recorder.calls == [1, 1, 1, 1]  # each in a call of its own
    assert [float(r["y"][0, 0]) for r in results] == [1.0, 3.0, 5.0, 7.0]


def test_a_leader_that_may_have_company_yields_to_the_loop_first() -> None:
    async def instant(inputs: Tensors) -> Tensors:
        return {"y": inputs["x"] + 1}

    async def main() -> bool:
        turned = asyncio.Event()
        asyncio.get_running_loop().call_soon(turned.set)
        await Batcher(BatchPolicy(max_batch_size=8), instant).submit({"x": np.zeros((1, 2))})
        return turned.is_set()

    assert run(main()) is True


def test_requests_that_come_while_a_batch_runs_are_batched_next() -> None:
    recorder = Recorder()  # each call takes 1 ms: a runtime in a worker thread
    batcher = Batcher(BatchPolicy(max_batch_size=8), recorder)
    xs = [np.full((1, 4), float(i), np.float32) for i in range(5)]

    async def main() -> list[Tensors]:
        first = asyncio.ensure_future(batcher.submit({"x": xs[0]}))
        await asyncio.sleep(0.0003)  # the first batch is running now
        later = [batcher.submit({"x": x}) for x in xs[1:]]
        return await asyncio.gather(first, *later)

    results = run(main())
    for x, result in zip(xs, results):
        np.testing.assert_array_equal(result["y"], 2 * x + 1)
    assert recorder.calls == [1, 4]


def test_a_leader_cancelled_while_gathering_leaves_the_others_answered() -> None:
    recorder = Recorder()
    batcher = Batcher(BatchPolicy(max_batch_size=8), recorder)
    xs = [np.full((1, 4), float(i), np.float32) for i in range(3)]

    async def main() -> list[object]:
        leader = asyncio.ensure_future(batcher.submit({"x": xs[0]}))
        await asyncio.sleep(0)  # the leader is gathering
        others = [asyncio.ensure_future(batcher.submit({"x": x})) for x in xs[1:]]
        leader.cancel()
        results = await asyncio.gather(leader, *others, return_exceptions=True)
        again = await batcher.submit({"x": xs[0]})  # and the batcher still serves
        return [*results, again]

    cancelled, *answers, again = run(main())
    assert isinstance(cancelled, asyncio.CancelledError)
    for x, answer in zip(xs[1:], answers):
        np.testing.assert_array_equal(answer["y"], 2 * x + 1)
    np.testing.assert_array_equal(again["y"], 2 * xs[0] + 1)
    assert recorder.calls == [2, 1]


def test_a_request_as_big_as_a_batch_runs_beside_a_running_batch() -> None:
    running: list[int] = []

    async def runtime(inputs: Tensors) -> Tensors:
        rows = len(inputs["x"])
        running.append(rows)
        if rows == 1:
            await small_may_end.wait()  # a long call: a runtime in a worker thread
        running.remove(rows)
        return {"y": inputs["x"] + 1}

    batcher = Batcher(BatchPolicy(max_batch_size=4), runtime)
    small, big = np.zeros((1, 2), np.float32), np.zeros((4, 2), np.float32)

    async def main() -> tuple[Tensors, Tensors, list[int]]:
        first = asyncio.ensure_future(batcher.submit({"x": small}))
        while not running:
            await asyncio.sleep(0)  # until the small request's batch runs
        answer = await asyncio.wait_for(batcher.submit({"x": big}), 5)
        still_running = list(running)  # the big one did not wait for it
        small_may_end.set()
        return await first, answer, still_running

    small_may_end = asyncio.Event()
    one, four, still_running = run(main())
    assert still_running == [1]
    assert one["y"].shape == (1, 2) and four["y"].shape == (4, 2)
    assert batcher.batches == 2 and batcher.rows == 5


@pytest.mark.parametrize("size", [0, 1])
def test_batching_off_below_two_rows(size: int) -> None:
    assert not BatchPolicy(max_batch_size=size).enabled


def test_the_server_batches_concurrent_requests_and_reports_it() -> None:
    import httpx

    from mlbridge.auth import TokenAuthenticator
    from mlbridge.registry import DEMO_MODELS, load_registry
    from mlbridge.server.app import create_app
    from mlbridge.settings import load_settings

    registry = load_registry([DEMO_MODELS / "mnist-cnn.onnx"])
    settings = load_settings(environ={}, max_batch_size=8)
    app = create_app(registry, TokenAuthenticator("s", DEMO_MODELS / "token"), settings)
    images = np.random.default_rng(0).random((16, 28, 28)).astype(np.float32)

    async def main() -> tuple[list[httpx.Response], dict]:
        transport = httpx.ASGITransport(app)
        headers = {"Authorization": "Bearer s"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://m", headers=headers
        ) as c:
            bodies = [image.tolist() for image in images]
            replies = await asyncio.gather(*(c.post("/mnist-cnn", json=b) for b in bodies))
            stats = (await c.get("/v2/models/mnist-cnn/stats")).json()
        return replies, stats

    replies, stats = run(main())
    alone = registry.get("mnist-cnn").runtime.predict({"input": images})["output"]
    for reply, expected in zip(replies, alone):
        np.testing.assert_allclose(reply.json(), expected, rtol=1e-5, atol=1e-5)
    (counts,) = stats["model_stats"]
    assert counts["request_count"] == counts["inference_count"] == 16
    assert counts["execution_count"] < 16
