"""Several workers on one study from one command: ``einnas search --workers N``.

The study already coordinates workers (``loop.py``: shared slots, no architecture
twice, the population read from the storage), so one command that uses the machine
is the same command started N times: this process opens the study, starts N - 1
worker processes on it (``spawn``: each loads its own torch with one thread) and
runs the N-th itself with the progress display, which reads the whole study. The
final retrain runs once, in this process, after every worker has stopped.

With N > 1 the trials run in parallel, so which architectures are proposed depends
on timing; ``--workers 1`` gives the repeatable sequential search.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace


def machine_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; the CPU count elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def free_cores() -> int:
    """Threads for one model on this machine now (the final retrain): every core when they
    are idle, one when other work keeps them busy — with more threads than free cores,
    torch's threads wait for each other (measured on a 2-core machine at load 12: a
    32-epoch retrain of a 150k-parameter MLP took 286 s with two threads)."""
    cores = machine_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def _child(config) -> None:
    """Entry point of a worker process: join the study and run trials, no output."""
    import optuna

    from einnas.search.run import Search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        Search(replace(config, workers=1)).run(progress=None, finish=False)
    except KeyboardInterrupt:  # the running trial was given back by the loop
        pass


class Workers:
    """``count - 1`` worker processes on a study, started on enter, joined on exit.

    Example::

        with Workers(config, 4):
            search.run(finish=False)      # the 4th worker, here
    """

    def __init__(self, config, count: int):
        self.config, self.count = config, count
        self.procs: list = []

    def __enter__(self) -> "Workers":
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        for _ in range(self.count - 1):
            proc = context.Process(target=_child, args=(self.config,), daemon=False)
            proc.start()
            self.procs.append(proc)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:  # interrupted or failed: ask the others to give their trials back
            for proc in self.procs:
                if proc.is_alive():
                    try:
                        os.kill(proc.pid, signal.SIGINT)
                    except OSError:
                        pass
        import sys

        for proc in self.procs:
            proc.join(timeout=None if kind is None else 30)
            if proc.is_alive():  # a lost trial: the next run fails and retries it
                proc.terminate()
                proc.join(5)
            elif kind is None and proc.exitcode:
                print(f"einnas search: worker process {proc.pid} exited with status {proc.exitcode}",
                      file=sys.stderr)
