"""The quickstart's stages: each run once (a finished stage is skipped, so an interrupted quickstart
continues) and timed, in turn or in two lanes side by side; and the matmul peak that their MFU is
measured against."""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..machine import die_with_parent, matmul_peak

# (job, family) -> [(key, title, meaning, run, the file that marks the stage done)]
StageList = Callable[[Any, str], list[tuple[str, str, str, Callable[[], Any], Path]]]


def run_stage(timings: dict[str, float], echo: Callable[[str], None], key: str, title: str, meaning: str,
              fn: Callable[[], Any], done: Path | None = None) -> Any:
    """Run one stage unless ``done`` exists (an interrupted quickstart continues), timing it."""
    echo(f"\n== {title}\n   {meaning}")
    if done is not None and done.exists():
        echo(f"   already done ({done} exists)")
        return None
    t = time.perf_counter()
    result = fn()
    timings[key] = round(time.perf_counter() - t, 1)
    echo(f"   done in {timings[key]:.0f} s")
    return result


def run_lane(stages: StageList, job: Any, family: str, echo: Callable[[str], None] = print,
             between: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Every stage ``stages(job, family)`` lists, with ``job.threads`` torch threads; returns their
    seconds. ``between`` runs before each stage (the other lane's failure stops this one there)."""
    torch.set_num_threads(job.threads)
    timings: dict[str, float] = {}
    for spec in stages(job, family):
        between()
        run_stage(timings, echo, *spec)
    return timings


# Two lanes. These models are small: one thread runs them at a higher fraction of its core's peak
# than two threads run one of them (T5 fine-tuning steps, idle 2-core machine: 0.83 s on 1 thread,
# 0.45 s on 2, 0.77 s on each of two 1-thread processes side by side: 2.6 instead of 2.2 steps/s).
# So the T5 stages run in a spawned process while this one runs ELECTRA's and MiniLM's, each lane
# with half the threads: the same stages with the same seeds, and with one thread per lane the same
# numbers as the stages run in turn on one thread (tests/recipes/test_quickstart.py).
def _labelled(echo: Callable[[str], None], family: str) -> Callable[[str], None]:
    """``echo`` with each non-empty line of a message prefixed by ``[family]`` (two lanes print at once)."""
    return lambda text: echo("\n".join(f"[{family}] {line}" if line else line for line in text.split("\n")))


def _lane_process(conn, stages: StageList, job: Any, family: str, parent_pid: int) -> None:
    die_with_parent(parent_pid)  # a killed quickstart (SIGTERM / SIGKILL: no cleanup) takes its lane along
    try:
        conn.send(("ok", run_lane(stages, job, family, _labelled(lambda text: print(text, flush=True), family))))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent, which re-raises it
        text = traceback.format_exc()
        try:
            conn.send(("error", (e, text)))
        except Exception:  # an exception that does not pickle: its traceback, as text
            conn.send(("error", (RuntimeError(f"the T5 lane failed:\n{text}"), text)))
    finally:
        conn.close()


def default_lanes(lanes: int | None) -> int:
    """``lanes`` checked; None: 2 with two or more torch threads, else 1."""
    if lanes is None:
        return 2 if torch.get_num_threads() >= 2 else 1
    if lanes not in (1, 2):
        raise ConfigError(f"quickstart lanes={lanes}: choose 1 (stages in turn) or 2 (T5 beside ELECTRA)")
    if lanes == 2 and torch.get_num_threads() < 2:  # two processes of one thread: twice the threads asked for
        raise ConfigError(f"quickstart lanes=2 runs a thread in each lane: give 2 or more threads (now "
                          f"{torch.get_num_threads()}), or lanes=1")
    return lanes


def run_lanes(stages: StageList, job: Any, lanes: int, timings: dict[str, float],
              echo: Callable[[str], None]) -> dict[str, float]:
    """The stages of ``stages(job, "t5")`` and ``stages(job, "electra")``: in turn (``lanes`` 1), or
    T5's in a second process (``lanes`` 2). ``stages`` must be a module-level function and ``job``
    picklable (``job.threads``: torch threads per lane). Fills ``timings``; returns each timed
    stage's matmul peak (FLOP/s of ``job.threads`` threads in ``job.precision``: the MFU denominator)."""
    torch.set_num_threads(job.threads)
    dtype = torch.bfloat16 if job.precision == "bf16" else torch.float32

    def peak_now() -> float:
        return matmul_peak(dtype=dtype)

    peak = peak_now()  # probed before and after the lanes (the machine is quiet then): the best one
    lane_times: dict[str, float] = {}
    if lanes == 1:
        for family in ("t5", "electra"):
            lane_times.update(run_lane(stages, job, family, echo))
    else:
        _two_lanes(stages, job, lane_times, echo)
    timings.update(lane_times)
    return dict.fromkeys(lane_times, max(peak, peak_now()))


def _two_lanes(stages: StageList, job: Any, timings: dict[str, float], echo: Callable[[str], None]) -> None:
    echo(f"\n   two lanes: the T5 stages in a second process, beside ELECTRA's ({job.threads} thread(s) each)")
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's OpenMP state
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_lane_process, args=(send, stages, job, "t5", os.getpid()), name="quickstart-t5-lane")
    child.start()
    send.close()
    done: list[dict[str, float]] = []

    def check_t5() -> None:
        """Take the T5 lane's message if it has sent one: its seconds, or its error (raised here)."""
        if done or not receive.poll():
            return
        try:
            status, value = receive.recv()
        except EOFError:
            child.join()
            raise RuntimeError(f"the T5 lane of the quickstart died (exit code {child.exitcode})") from None
        if status == "error":
            echo(value[1])
            raise value[0]
        done.append(value)

    try:
        timings.update(run_lane(stages, job, "electra", _labelled(echo, "electra"), between=check_t5))
        while not done:
            receive.poll(None)  # wait for the T5 lane
            check_t5()
        timings.update(done[0])
    finally:
        if child.is_alive():
            child.terminate()  # this lane failed: the finished stages are on disk, a rerun continues
        child.join()
