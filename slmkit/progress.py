"""Progress and logs: rich bars on a terminal, plain timestamped lines in CI and pipes."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import IO


class Reporter:
    """Where a run talks to its user. Levels: 0 quiet (warnings only), 1 normal, 2 verbose."""

    def __init__(self, stream: IO | None = None, *, level: int = 1, rich: bool | None = None):
        self.stream = stream or sys.stdout
        self.level = level
        self.rich = self.stream.isatty() if rich is None else rich
        self._console = None
        if self.rich:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def _line(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, markup=False)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def info(self, msg: str) -> None:
        if self.level >= 1:
            self._line(msg)

    def debug(self, msg: str) -> None:
        if self.level >= 2:
            self._line(msg)

    def warn(self, msg: str) -> None:
        self._line(f"warning: {msg}")

    def table(self, title: str, columns: list[str], rows: list[list]) -> None:
        """A table: rich on a terminal, aligned text otherwise."""
        if self.level < 1:
            return
        if self._console is not None:
            from rich.table import Table

            t = Table(title=title)
            for c in columns:
                t.add_column(c)
            for r in rows:
                t.add_row(*[str(x) for x in r])
            self._console.print(t)
            return
        print(format_table(title, columns, rows), file=self.stream, flush=True)

    @contextmanager
    def progress(self, total: int | None, description: str):
        if self.level < 1:
            yield _Silent()
        elif self._console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                          console=self._console, transient=False) as bar:
                task = bar.add_task(description, total=total, status="")
                yield _RichTask(bar, task)
        else:
            yield _LineTask(self, total, description)


def format_table(title: str, columns: list[str], rows: list[list]) -> str:
    cells = [columns] + [[str(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = [title] if title else []
    for j, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _status(fields: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


class _Silent:
    def advance(self, n: int = 1, **fields) -> None:
        pass


class _RichTask:
    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def advance(self, n: int = 1, **fields) -> None:
        self.bar.update(self.task, advance=n, status=_status(fields))


class _LineTask:
    """Plain progress: a line at most every 10% (or 15 s), and at the end."""

    def __init__(self, reporter: Reporter, total: int | None, description: str):
        self.reporter, self.total, self.description = reporter, total, description
        self.done, self.started, self.last = 0, time.time(), 0.0
        self.next_mark = 0.1

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        now = time.time()
        frac = self.done / self.total if self.total else 0.0
        if frac >= self.next_mark or now - self.last > 15 or (self.total and self.done >= self.total):
            self.last = now
            while self.next_mark <= frac:
                self.next_mark += 0.1
            of = f"/{self.total}" if self.total else ""
            eta = ""
            if self.total and self.done:
                eta = f" eta {((now - self.started) / self.done) * (self.total - self.done):.0f}s"
            self.reporter.info(f"{self.description}: {self.done}{of}{eta} {_status(fields)}".rstrip())
