"""Run training jobs behind one progress bar: in this process, in local worker processes (forkserver), or as Ray tasks.

Every worker trains on one torch thread: two processes with two threads each on 2 cores ran 8x slower.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import torch
from tqdm.auto import tqdm

from hti_rl.errors import HTIError
from hti_rl.io import check_writable
from hti_rl.training.jobs import AnchorJob, train_anchor


def run_jobs(jobs: list[AnchorJob], workers: int, total_steps: int, progress: bool, description: str = "train anchors",
             start: dict[tuple[int, int | None], int] | None = None, backend: str = "local") -> None:
    """Train ``jobs`` (anchors or any :class:`AnchorJob` subclass) in-process, in ``workers`` local
    processes or as Ray tasks, behind one progress bar of ``total_steps`` environment steps.

    :param start: steps already done per job key (from checkpoints); none when ``None``.
    :param description: the progress bar's label (what the jobs train).
    """
    if not jobs:  # nothing to train: no empty progress bar
        return
    for tb in {job.tb_root for job in jobs}:
        check_writable(tb)  # before training: SB3 opens its TensorBoard files only once learning starts
    bar = _StepBar(total_steps, start or {}, progress)
    bar.bar.set_description(description)
    try:
        if backend == "ray":
            _run_ray(jobs, workers, bar)
        elif (workers == 1 or len(jobs) <= 1) and threading.current_thread() is threading.main_thread():
            _run_inline(jobs, bar)
        else:
            _run_processes(jobs, workers, bar)
    finally:
        bar.close()


class _StepBar:
    """A progress bar of environment steps summed over jobs; ``put((job.key, steps))`` like a queue.

    :param total: steps of all jobs to train.
    :param start: steps already done per job key (from checkpoints).
    :param enabled: show the bar.
    """

    def __init__(self, total: int, start: dict[tuple[int, int | None], int], enabled: bool):
        self.steps = dict(start)
        self.bar = tqdm(total=total, initial=sum(start.values()), unit="step", desc="train anchors", disable=not enabled)

    def put(self, report: tuple[tuple[int, int | None], int]) -> None:
        key, steps = report
        self.steps[key] = steps
        self.bar.n = min(sum(self.steps.values()), self.bar.total)  # SB3 overshoots to whole rollouts
        self.bar.refresh()

    def drain(self, reports: Any) -> None:
        """Move every pending report from a queue (multiprocessing or Ray) onto the bar."""
        while not reports.empty():
            self.put(reports.get())

    def close(self) -> None:
        self.bar.close()


# Off the main thread jobs run in worker processes even one at a time: two trainings inline in one process
# share torch's and numpy's global generators, so their numbers would depend on thread timing (measured:
# the same seeds gave other parameters than in worker processes).
def _run_inline(jobs: list[AnchorJob], bar: _StepBar) -> None:
    """One job after another in this process, on one torch thread as in a worker process. SB3's small
    networks gain nothing from more (measured, PPO on Pendulum: 3,353 steps/s on 1 thread, 3,207 on 2),
    and two processes on 2 cores with 2 threads each ran 8× slower (398 steps/s each, 3,362 on 1 thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            train_anchor(job, progress=bar)
    finally:
        torch.set_num_threads(threads)


def _run_processes(jobs: list[AnchorJob], workers: int, bar: _StepBar) -> None:
    """``workers`` local processes (one torch thread each); a failure in one anchor is raised here."""
    # forkserver: one clean server process imports torch and SB3 once, then forks each worker from it.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hti_rl.training.runner", "hti_rl.spec.task"])
    reports = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(reports,))
    try:
        pending = {pool.submit(_train_in_worker, job) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            bar.drain(reports)
            for future in done:
                future.result()
        bar.drain(reports)
    except BaseException:
        # Ctrl-C or a failed anchor: stop now. Waiting for the pool would train every queued anchor to the end
        # while this process holds the run lock; checkpoints written so far stay, and a rerun resumes from them.
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started, end the workers (SIGTERM, then SIGKILL after 5 s), and return at once."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=1)


_worker_reports: Any = None  # in a worker process only: its progress queue (set by _init_worker)


def _init_worker(reports: Any) -> None:
    global _worker_reports
    _worker_reports = reports
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: the parent alone handles it (and ends the workers), so no worker
    # prints a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp.parent_process()
    if parent is not None:  # a SIGKILLed parent cannot end us: leave as soon as it is gone, idle or not
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True, name="hti-rl parent watch").start()


def _exit_with(sentinel: int) -> None:
    """Block until the parent process ends, then end this worker at once."""
    mp_connection.wait([sentinel])
    os._exit(1)


def _train_in_worker(job: AnchorJob) -> dict[str, Any]:
    return train_anchor(job, progress=_worker_reports)


def _train_on_ray(job: AnchorJob, reports: Any) -> dict[str, Any]:
    torch.set_num_threads(1)
    return train_anchor(job, progress=reports)


RAY_RETRIES = 3
"""Times Ray runs a job again when its worker process dies (killed, out of memory, node lost); the job
resumes from its latest checkpoint, as after any interruption."""


def _run_ray(jobs: list[AnchorJob], workers: int, bar: _StepBar) -> None:
    """The same jobs as Ray tasks (one CPU each), at most ``workers`` at a time, on the cluster
    ``ray.init`` already joined, else on a local one started here. A job whose worker dies is retried
    (:data:`RAY_RETRIES`) and resumes from its checkpoint; an exception in a job is raised here."""
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError as exc:
        raise HTIError("the ray backend needs Ray, which is not installed: pip install hti-rl[ray]") from exc
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    remote = ray.remote(num_cpus=1, max_retries=RAY_RETRIES, retry_exceptions=False)(_train_on_ray)
    reports = Queue()
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < workers:
            running.append(remote.remote(waiting.pop(0), reports))
        done, running = ray.wait(running, timeout=0.5)
        bar.drain(reports)
        ray.get(done)
    bar.drain(reports)
