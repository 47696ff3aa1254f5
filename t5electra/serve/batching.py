"""Dynamic batching: requests that arrive close together share one model call.

One :class:`DynamicBatcher` per served model. Request handlers (coroutines on the event loop)
``await batcher.submit(key, payload, size)``; a collector task takes the oldest waiting job,
lets up to ``max_wait`` seconds pass for more jobs with the same ``key`` (jobs with equal keys can
run in one call: same task, same decoding options) until ``max_batch_size`` rows are gathered,
and hands the batch to the model's worker thread. So the event loop never runs a model, a model
never runs two batches at once, and while one batch runs the next one fills up: under load,
batches grow by themselves; when idle, a lone request waits at most ``max_wait``.

    loop:  handler -> submit() -> [bounded asyncio.Queue] -> collector -> worker thread -> run_batch()
                ^------------------------------- future <-------------------------------------'

Back-pressure: the queue holds at most ``max_queue`` jobs (plus at most ``max_batch_size`` the
collector has set aside for the next batches); ``submit`` on a full queue raises
:class:`QueueFullError` at once (the server answers 503 with Retry-After) instead of letting
latency grow without bound. A job whose caller gave up (timeout; a closed connection, which the
handler watches for: app.py's ``submit``) is dropped before it runs. If a batch fails, each of its jobs is retried alone, so one bad request cannot fail the
requests it was batched with.

Cancellation is cooperative: the model code calls :meth:`DynamicBatcher.check` between steps (each
forward pass of fill-mask, each decoding step of generate); once every request of the running
batch was given up, or the server is stopping, it raises :class:`Abandoned` and the worker moves on
to the next batch. So a request past its deadline stops costing model time after at most one step,
and shutdown does not wait for work nobody will read.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Callable, Hashable

import torch

logger = logging.getLogger("t5electra.serve")

# run_batch(key, payloads) -> one result per payload, called in the worker thread.
BatchFn = Callable[[Hashable, list[Any]], list[Any]]


class QueueFullError(Exception):
    """The model's queue is full; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, model: str, queued: int, retry_after: int):
        super().__init__(f"model {model!r} is busy: {queued} requests are already waiting; retry in "
                         f"{retry_after} s")
        self.retry_after = retry_after


class Abandoned(RuntimeError):
    """Raised by :meth:`DynamicBatcher.check` in the worker: nobody waits for the running batch."""


@dataclasses.dataclass
class _Job:
    key: Hashable        # jobs with equal keys may share a call
    payload: Any         # what run_batch gets for this request
    size: int            # rows it adds to a batch (texts)
    future: asyncio.Future
    enqueued: float      # time.perf_counter() at submit
    gave_up: threading.Event = dataclasses.field(default_factory=threading.Event)  # caller stopped waiting


@dataclasses.dataclass
class BatchStats:
    """Counters shown by GET /healthz (and used by the load test)."""

    batches: int = 0         # model calls made
    jobs: int = 0            # requests answered through them
    rows: int = 0            # texts processed
    max_rows: int = 0        # largest batch seen, in texts
    seconds: float = 0.0     # time spent inside run_batch
    waited: float = 0.0      # seconds requests spent queued before their batch started, summed
    abandoned: int = 0       # batches stopped part-way because every caller gave up (or shutdown)

    def as_dict(self) -> dict[str, Any]:
        mean = self.rows / self.batches if self.batches else 0.0
        wait_ms = 1000 * self.waited / self.jobs if self.jobs else 0.0
        return {"batches": self.batches, "requests": self.jobs, "texts": self.rows, "max_batch_texts": self.max_rows,
                "mean_batch_texts": round(mean, 3), "busy_seconds": round(self.seconds, 3),
                "mean_queue_ms": round(wait_ms, 2), "abandoned_batches": self.abandoned}


class DynamicBatcher:
    """A bounded queue, a collector task on the event loop and one worker thread for one model."""

    def __init__(self, name: str, run_batch: BatchFn, *, max_batch_size: int = 16, max_wait_s: float = 0.005,
                 max_queue: int = 256):
        self.name = name
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stats = BatchStats()
        # One thread per model: torch releases the GIL inside kernels, and a model's batches
        # must not interleave (generation state, hooks), so one at a time.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self._queue: asyncio.Queue[_Job] | None = None
        self._pending: collections.deque[_Job] = collections.deque()  # taken from the queue, other key
        self._collector: asyncio.Task | None = None
        self._batch_ema_s = 0.05  # running mean of a batch's duration, for Retry-After
        self._running: list[_Job] = []    # the batch in the worker thread (read by check())
        self._stopping = threading.Event()
        self._closed = False              # stop() shut the worker down: no more jobs

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the queue and the collector on the running loop (idempotent)."""
        if self._collector is None or self._collector.done():
            self._stopping.clear()
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._pending.clear()
            self._collector = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Fail the waiting jobs, make the running batch stop at its next check(), and return
        without waiting for the worker thread."""
        self._stopping.set()
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
            self._collector = None
        for job in list(self._pending) + self._drain():
            if not job.future.done():
                job.future.set_exception(Abandoned(f"model {self.name!r} is shutting down"))
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _drain(self) -> list[_Job]:
        jobs = []
        while self._queue is not None and not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    @property
    def queued(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._pending)

    # -- the handler side -----------------------------------------------------------------------
    async def submit(self, key: Hashable, payload: Any, size: int = 1) -> Any:
        """Queue one request and wait for its result; QueueFullError if the queue is full.

        Cancel the awaiting task (``asyncio.wait_for``) to give up: the job is then skipped (or,
        running, stopped at its next check()). :class:`Abandoned` once the batcher was stopped.
        """
        if self._closed:
            raise Abandoned(f"model {self.name!r} is shutting down")
        self.start()
        loop = asyncio.get_running_loop()
        job = _Job(key, payload, size, loop.create_future(), time.perf_counter())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(self.name, self.queued, self._retry_after()) from None
        try:
            return await job.future
        except asyncio.CancelledError:  # timeout or disconnect: the worker may stop this job's work
            job.gave_up.set()
            raise

    def check(self) -> None:
        """In the worker thread, between steps of a batch: raise :class:`Abandoned` when every job
        of the running batch was given up by its caller, or the batcher is stopping."""
        if self._stopping.is_set():
            raise Abandoned(f"model {self.name!r} is shutting down")
        running = self._running
        if running and all(job.gave_up.is_set() for job in running):
            raise Abandoned(f"every request of this batch on model {self.name!r} was given up")

    def _retry_after(self) -> int:
        """Seconds until the queue has probably drained: batches ahead x mean batch time."""
        batches_ahead = math.ceil(self.queued / self.max_batch_size)
        return max(1, math.ceil(batches_ahead * self._batch_ema_s))

    # -- the collector --------------------------------------------------------------------------
    async def _first_job(self) -> _Job:
        """The oldest job set aside earlier (another key), else the next one from the queue."""
        if self._pending:
            return self._pending.popleft()
        return await self._queue.get()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._first_job()
            if first.future.done():  # its caller gave up while it waited
                continue
            batch, rows = [first], first.size
            deadline = loop.time() + self.max_wait_s
            # Jobs set aside earlier (another key) that fit this batch join first, in order.
            for job in list(self._pending):
                if rows >= self.max_batch_size:
                    break
                if job.key == first.key and rows + job.size <= self.max_batch_size:
                    self._pending.remove(job)
                    if not job.future.done():
                        batch.append(job)
                        rows += job.size
            # Then wait, up to the deadline, for more from the queue.
            while rows < self.max_batch_size and len(self._pending) < self.max_batch_size:
                job = await self._next_job_from_queue(deadline - loop.time())
                if job is None:
                    break
                if job.future.done():
                    continue
                if job.key == first.key and rows + job.size <= self.max_batch_size:
                    batch.append(job)
                    rows += job.size
                else:
                    self._pending.append(job)
            await self._run(batch, rows)

    async def _next_job_from_queue(self, timeout: float) -> _Job | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _run(self, batch: list[_Job], rows: int) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            outcomes = await loop.run_in_executor(self._executor, self._call, batch)
        except asyncio.CancelledError:  # stop(): the worker drops the batch at its next check()
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(Abandoned(f"model {self.name!r} is shutting down"))
            raise
        except Exception as e:  # noqa: BLE001 - the worker itself failed: answer, and keep collecting
            logger.exception("model %s: worker failed", self.name)
            outcomes = [(False, e)] * len(batch)
        elapsed = time.perf_counter() - start
        self._batch_ema_s = 0.8 * self._batch_ema_s + 0.2 * elapsed
        s = self.stats
        s.batches += 1
        s.jobs += len(batch)
        s.rows += rows
        s.max_rows = max(s.max_rows, rows)
        s.seconds += elapsed
        s.waited += sum(start - job.enqueued for job in batch)
        if outcomes and all(isinstance(value, Abandoned) for _, value in outcomes):
            s.abandoned += 1
            logger.info("model %s: abandoned a batch of %d requests after %.2f s (%s)", self.name, len(batch),
                        elapsed, outcomes[0][1])
        for job, (ok, value) in zip(batch, outcomes):
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _call(self, batch: list[_Job]) -> list[tuple[bool, Any]]:
        """In the worker thread: run the batch; on failure, each job alone. (ok, result or exception)."""
        key = batch[0].key
        with torch.inference_mode():
            self._running = batch
            try:
                results = self.run_batch(key, [job.payload for job in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
                return [(True, r) for r in results]
            except Abandoned as e:
                return [(False, e)] * len(batch)
            except Exception as e:  # noqa: BLE001 - every error goes back to its request
                if len(batch) == 1:
                    return [(False, e)]
                logger.info("batch of %d failed (%s); retrying its requests one by one", len(batch), e)
            finally:
                self._running = []
            outcomes = []
            for job in batch:
                self._running = [job]
                try:
                    outcomes.append((True, self.run_batch(key, [job.payload])[0]))
                except Exception as e:  # noqa: BLE001 - Abandoned included: only this job is dropped
                    outcomes.append((False, e))
                finally:
                    self._running = []
            return outcomes
