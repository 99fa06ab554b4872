"""Showing a running search: a tqdm bar on a terminal, one line per trial otherwise.

The figures come from the study (all workers together), not from this process:
with ``--workers N`` the one display of the command shows every worker's trials
(each line once, in the order this process saw them finish).
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
        self.shown: set[int] | None = None  # trial numbers already printed (line mode); None: not started
        if not quiet and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="search", unit="trial", file=self.stream, dynamic_ncols=True)

    def __call__(self, view: StudyView, finished: TrialRecord | None) -> None:
        best = view.best
        if self.bar is not None:
            self.bar.n = min(view.counted, self.total) if self.total else view.counted
            pruned = f"pruned={view.pruned} " if view.pruned else ""
            self.bar.set_postfix_str(
                f"{pruned}failed={view.failed} running={view.running} best={_pct(best.value if best else None)}",
                refresh=False,
            )
            self.bar.refresh()
        elif not self.quiet:
            total = f"/{self.total}" if self.total else ""
            if self.shown is None:  # trials of an earlier run of the study are not news
                self.shown = {r.number for r in view.records if r.counted and r is not finished}
            done = [r for r in view.records if r.counted and r.number not in self.shown]
            if finished is not None and finished.counted and finished.number not in self.shown:
                done = [r for r in done if r.number != finished.number] + [finished]
            for k, record in enumerate(done, view.counted - len(done) + 1):
                self.shown.add(record.number)
                if record.state == "COMPLETE":
                    outcome = f"val {_pct(record.value)}"
                elif record.pruned:
                    outcome = f"{record.status}, val {_pct(record.attrs.get('rung_value'))} after {len(record.attrs.get('curve') or [])} epochs"
                else:
                    outcome = f"{record.status}" + (f" ({record.reason}: {record.detail})" if record.reason else "")
                print(
                    f"[{k}{total}] trial {record.number} {record.archid} {record.origin}: {outcome}; "
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
