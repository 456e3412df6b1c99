"""Group commit for the HTTP service: concurrent submissions share one batch.

Request threads put envelopes (with their document, if any) on a queue and wait
on a future; one thread takes everything queued, up to ``max_batch``, and hands
it to the sequencer as a single batch — one transaction, one fsync, one signed
checkpoint for all of them. Under load a batch fills while the previous one
commits, so throughput grows with concurrency while each caller still gets its
answer only once its entry is durable and covered by a signed checkpoint.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from registry.sequencer import Checked, Outcome
from registry.storage.protocol import StoredDocument

log = logging.getLogger("qiledger.api")

SubmitBatch = Callable[[Sequence[bytes | Checked], Mapping[int, StoredDocument]], list[Outcome]]


@dataclass(frozen=True)
class _Job:
    envelope: bytes | Checked
    document: StoredDocument | None
    future: Future[Outcome]


class SubmissionQueue:
    def __init__(self, submit_batch: SubmitBatch, max_batch: int = 512) -> None:
        self._submit_batch = submit_batch
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="qiledger-sequencer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(
        self, envelope: bytes | Checked, document: StoredDocument | None = None
    ) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the registry is shutting down"))
        else:
            self._jobs.put(_Job(envelope, document, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self._max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[_Job]) -> None:
        # A caller that gave up (timed out) before its job was taken is dropped;
        # once running, a job's future can no longer be cancelled.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        documents = {i: job.document for i, job in enumerate(jobs) if job.document is not None}
        try:
            outcomes = self._submit_batch([job.envelope for job in jobs], documents)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
            log.error("batch of %d failed: %s", len(jobs), exc)
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.future.set_result(outcome)
