"""Showing a running search: a tqdm bar on a terminal, one line per trial otherwise.

The figures come from the study (all workers together), not from this process.
"""

from __future__ import annotations

import sys

from einnas.search.records import StudyView, TrialRecord


def _pct(value) -> str:
    from einnas._util import format_accuracy

    return format_accuracy(value)


class SearchProgress:
    """A ``progress`` callback for :func:`einnas.search.run_worker`: trials done, failures,
    best so far. ``total`` None (a ``--timeout`` search) shows a counter without a bar."""

    def __init__(self, total: int | None, quiet: bool = False, stream=None):
        self.total, self.quiet = total, quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        if not quiet and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="search", unit="trial", file=self.stream, dynamic_ncols=True)

    def __call__(self, view: StudyView, finished: TrialRecord | None) -> None:
        best = view.best
        if self.bar is not None:
            self.bar.n = min(view.counted, self.total) if self.total else view.counted
            self.bar.set_postfix_str(
                f"failed={view.failed} running={view.running} best={_pct(best.value if best else None)}", refresh=False
            )
            self.bar.refresh()
        elif finished is not None and not self.quiet:
            total = f"/{self.total}" if self.total else ""
            if finished.state == "COMPLETE":
                outcome = f"val {_pct(finished.value)}"
            else:
                outcome = f"{finished.status}" + (f" ({finished.reason}: {finished.detail})" if finished.reason else "")
            print(
                f"[{view.counted}{total}] trial {finished.number} {finished.archid} {finished.origin}: {outcome}; "
                f"best {_pct(best.value if best else None)}, failed {view.failed}",
                file=self.stream, flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "SearchProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
