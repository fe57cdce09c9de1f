"""Progress display for the CLI: a rich progress bar (files, bytes, rate, ETA) on a terminal, nothing
otherwise (and never in --json mode, where stdout is for the machine)."""
from __future__ import annotations

import sys
from typing import Any, Dict



class ProgressReporter:
    def __init__(self, enabled: bool, verb: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.console: Any = None
        if self.enabled:  # rich is imported only for a terminal: it costs ~60 ms of start-up
            from rich.console import Console
            self.console = Console(stderr=True)
        self.verb = verb
        self.bar: Any = None
        self.task: Any = None
        self.files = 0
        self.total_files = 0

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, kind: str, info: Dict[str, Any]) -> None:
        if kind == "error" or kind == "problem":
            msg = f"{info.get('path', '')}: {info.get('error', info.get('message', ''))}".lstrip(": ")
            if self.bar is not None:
                self.bar.console.print(f"[yellow]warning:[/] {msg}", highlight=False, markup=True)
            elif self.enabled:
                self.console.print(f"[yellow]warning:[/] {msg}", highlight=False)
            else:
                print(f"recovault: warning: {msg}", file=sys.stderr)
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
        return f"{self.verb} {self.files}/{self.total_files} files"
