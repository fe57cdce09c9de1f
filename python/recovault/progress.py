"""Progress display for the CLI: a rich progress bar (files, bytes, rate, ETA) on a terminal, nothing
otherwise (and never in --json mode, where stdout is for the machine); and the library's warnings, as
`recovault: warning: ...` lines on stderr.

The library never prints: a job reports through its progress callback `(kind, info)`, where the kinds in
WARNING_KINDS are warnings ({"path", "error"} or {"message"}), or through an `on_warning(message)` callable;
the CLI passes `ProgressReporter` (or its `warn`) or `warn` as those.
"""
from __future__ import annotations

import sys
from typing import Any, Dict

WARNING_KINDS = ("error", "problem", "warning")


def notice(message: str) -> None:
    """One line on stderr telling of something done on the way (a vault upgraded), not a problem."""
    print(f"recovault: notice: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One warning line on stderr (stdout is for the result, with --json too)."""
    print(f"recovault: warning: {message}", file=sys.stderr, flush=True)


class ProgressReporter:
    def __init__(self, enabled: bool, verb: str, unit: str = "files") -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.console: Any = None
        if self.enabled:  # rich is imported only for a terminal: it costs ~60 ms of start-up
            from rich.console import Console
            self.console = Console(stderr=True)
        self.verb = verb
        self.unit = unit  # what "plan"/"more"/"file" events count (copy: recovery points)
        self.bar: Any = None
        self.task: Any = None
        self.files = 0
        self.total_files = 0

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

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
        if not self.enabled:
            return
        if kind == "plan":
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self.total_files = info.get("files", 0)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self._desc(), total=info.get("bytes", 0) or None)
        elif kind == "more" and self.bar is not None and self.task is not None:
            self.total_files += info.get("files", 0)
            task = self.bar.tasks[0]
            self.bar.update(self.task, total=(task.total or 0) + info.get("bytes", 0), description=self._desc())
        elif kind == "bytes" and self.bar is not None and self.task is not None:  # part of a big file or image
            self.bar.update(self.task, advance=info.get("bytes", 0))
        elif kind == "file" and self.bar is not None and self.task is not None:
            self.files += 1
            self.bar.update(self.task, advance=info.get("bytes", 0), description=self._desc())

    def _desc(self) -> str:
        return f"{self.verb} {self.files}/{self.total_files} {self.unit}"
