"""Progress display for the CLI, and the library's warnings as `recovault: warning: ...` lines on stderr.

Progress a person can trust: on a terminal, a rich bar with the elapsed time, the rate, the file at hand,
and totals. A job whose totals grow while it walks its sources says so: until it sends "walked" (the walk is
over, the totals are final) the totals read "... found so far", the bar only pulses and there is no time
remaining; then the bar, and the time remaining, measure against totals that no longer move. Nothing is
printed to a non-terminal (a pipe, a log) unless asked: RECOVAULT_PROGRESS=SECONDS prints one plain line
every SECONDS there (`recovault: progress: ...`); RECOVAULT_PROGRESS=0 turns the display off on a terminal
too. Never in --json mode's stdout: progress goes to stderr.

The library never prints: a job reports through its progress callback `(kind, info)`: "plan" (the job
starts: `files`, `bytes` known so far, `final` if they are the totals), "more" (totals grow), "walked" (they
are final), "file" (one done: `path`, `bytes`), "bytes" (part of a big file or image), "image" (one starts:
`path`), "prune" (a step: `step`, shown as a line of its own); the kinds in WARNING_KINDS are warnings
({"path", "error"} or {"message"}). An `on_warning(message)` callable is the other way. The CLI passes
`ProgressReporter` (or its `warn`) or `warn` as those.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

WARNING_KINDS = ("error", "problem", "warning")
PROGRESS_ENV = "RECOVAULT_PROGRESS"


def notice(message: str) -> None:
    """One line on stderr telling of something done on the way (a vault upgraded), not a problem."""
    print(f"recovault: notice: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One warning line on stderr (stdout is for the result, with --json too)."""
    print(f"recovault: warning: {message}", file=sys.stderr, flush=True)


def human_bytes(n: float, binary: bool = True) -> str:
    """`n` bytes for people: binary units (KiB, MiB: sizes such as --cache-max), or decimal ones (kB, MB: as
    the rate beside them on the bar, and the result lines, show bytes moved)."""
    step, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "kB", "MB", "GB", "TB"))
    for unit in units:
        if n < step or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= step
    raise AssertionError("unreachable")


def elapsed_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def short_path(path: str, width: int = 48) -> str:
    """The end of `path` (its name matters most), at most `width` characters."""
    return path if len(path) <= width else "..." + path[-(width - 3):]


@dataclass
class Tally:
    """What a job has done and how much there is: totals final once the walk is over (`final`)."""
    unit: str
    files: int = 0
    bytes: int = 0
    total_files: int = 0
    total_bytes: int = 0
    final: bool = False
    current: str = ""
    started: float = field(default_factory=time.monotonic)

    def totals(self) -> str:
        """"12/40 files, 1.2 MiB of 3.0 MiB", with "found so far" while the totals may still grow."""
        text = (f"{self.files}/{self.total_files} {self.unit}, {human_bytes(self.bytes, False)} of "
                f"{human_bytes(self.total_bytes, False)}")
        return text if self.final else text + " found so far"

    def line(self, verb: str) -> str:
        """One plain progress line (RECOVAULT_PROGRESS on a non-terminal)."""
        return (f"recovault: progress: {verb} {self.totals()}, {elapsed_text(time.monotonic() - self.started)} "
                f"elapsed" + (f", at {self.current}" if self.current else ""))


def progress_interval() -> Optional[float]:
    """RECOVAULT_PROGRESS: None (not set: a bar on a terminal only), 0 (off), or seconds between plain lines."""
    raw = os.environ.get(PROGRESS_ENV, "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class ProgressReporter:
    """The progress callback of one job: a rich bar on a terminal, plain lines every RECOVAULT_PROGRESS
    seconds elsewhere if asked, else only the warnings (see the module docstring)."""

    def __init__(self, enabled: bool, verb: str, unit: str = "files") -> None:
        interval = progress_interval()
        self.enabled = enabled and sys.stderr.isatty() and interval != 0
        self.lines_every = interval if enabled and interval and not self.enabled else None
        self.console: Any = None
        if self.enabled:  # rich is imported only for a terminal: it costs ~60 ms of start-up
            from rich.console import Console
            self.console = Console(stderr=True)
        self.verb = verb
        self.tally = Tally(unit)  # what "plan"/"more"/"file" events count (copy: recovery points)
        self.bar: Any = None
        self.task: Any = None
        self._last_line = 0.0

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.lines_every and self._last_line:  # where the job ended, once more
            print(self.tally.line(self.verb), file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning: above the bar on a terminal (it stays intact), else one line (see `warn`)."""
        if not self.enabled:
            warn(message)
            return
        from rich.markup import escape  # a path may hold [brackets]: text, not markup
        console = self.bar.console if self.bar is not None else self.console
        console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    def __call__(self, kind: str, info: Dict[str, Any]) -> None:
        if kind in WARNING_KINDS:
            self.warn(f"{info.get('path', '')}: {info.get('error', info.get('message', ''))}".lstrip(": "))
            return
        if not (self.enabled or self.lines_every):
            return
        if kind in ("prune", "step"):  # a step of a job that counts nothing (prune's phases, repair's)
            self._step(str(info.get("step", "")))
            return
        t = self.tally
        if kind == "plan":
            t.total_files, t.total_bytes, t.final = info.get("files", 0), info.get("bytes", 0), bool(info.get("final"))
            self._start_bar()
        elif kind == "more":
            t.total_files += info.get("files", 0)
            t.total_bytes += info.get("bytes", 0)
        elif kind == "walked":
            t.final = True
        elif kind == "bytes":  # part of a big file or image
            t.bytes += info.get("bytes", 0)
        elif kind == "file":
            t.files += 1
            t.bytes += info.get("bytes", 0)
        else:
            return
        if info.get("path"):
            t.current = str(info["path"])
        self._show()

    def _step(self, step: str) -> None:
        """One line per step: above the bar on a terminal, a progress line elsewhere (when asked)."""
        if self.enabled:
            from rich.markup import escape
            console = self.bar.console if self.bar is not None else self.console
            console.print(f"{escape(self.verb)}: {escape(step)}", highlight=False)
        else:
            print(f"recovault: progress: {self.verb}: {step}", file=sys.stderr, flush=True)

    def _start_bar(self) -> None:
        if not self.enabled or self.bar is not None:
            return
        from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)
        from rich.text import Text

        class TwoLines(Progress):
            """The bar, rate and times on one line; the totals and the file at hand, fitted, on the next (an
            80-column terminal holds both)."""

            def get_renderables(self):  # type: ignore[no-untyped-def]
                yield self.make_tasks_table(self.tasks)
                for task in self.tasks:
                    totals = task.fields.get("totals", "")
                    room = self.console.width - len(totals) - 4
                    current = short_path(task.fields.get("current", ""), room) if room > 12 else ""
                    yield Text(f"  {totals}" + (f"  {current}" if current else ""), no_wrap=True, overflow="ellipsis")

        self.bar = TwoLines(TextColumn("{task.description}"), BarColumn(bar_width=20), TransferSpeedColumn(),
                            TimeElapsedColumn(), TextColumn("elapsed"), TimeRemainingColumn(),
                            TextColumn("{task.fields[left]}"), console=self.console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.verb, total=None, totals="", current="", left="")

    def _show(self) -> None:
        t = self.tally
        if self.bar is not None:
            # The bar measures against final totals only: while they may grow it pulses (total None) and
            # no time remaining is shown, rather than a bar that moves back as the walk finds more.
            # Final totals of nothing (an unchanged backup): a full bar. A file that grew while read: no more
            # than full.
            total = max(t.total_bytes, t.bytes) if t.final else None
            self.bar.update(self.task, completed=t.bytes if total != 0 else 1, total=total or (1 if t.final else None),
                            totals=t.totals(), current=t.current, left="left" if t.final else "")
        elif self.lines_every:
            now = time.monotonic()
            if now - self._last_line >= self.lines_every:
                self._last_line = now
                print(t.line(self.verb), file=sys.stderr, flush=True)
