"""Progress and logs: rich bars on a terminal, plain timestamped lines in CI and pipes."""

from __future__ import annotations

import logging
import sys
import time
import warnings
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


def print_table(table, stream: IO | None = None) -> None:
    """A rich Table: drawn by rich on a terminal; in a pipe or file, the same cells as aligned plain
    lines at their full width (rich would squeeze them to 80 columns and break cells mid-word)."""
    stream = stream or sys.stdout
    if stream.isatty():
        from rich.console import Console

        Console(file=stream, highlight=False).print(table)
        return
    print(table_text(table), file=stream, flush=True)


def table_text(table) -> str:
    """A rich Table's title, header, cells and caption as plain text, no cell wrapped or cut."""
    columns = [str(c.header) for c in table.columns]
    cells = [[_plain(x) for x in c.cells] for c in table.columns]
    rows = [list(r) for r in zip(*cells)] if cells else []
    text = format_table(_plain(table.title, lines=True) if table.title else "", columns, rows)
    return text + (f"\n{_plain(table.caption, lines=True)}" if table.caption else "")


def _plain(renderable, lines: bool = False) -> str:
    """A cell's text on one line (``lines``: a title or caption keeps its line breaks)."""
    plain = getattr(renderable, "plain", None)  # rich Text
    text = str(plain if plain is not None else renderable)
    return text.strip() if lines else " ".join(text.split())


def format_table(title: str, columns: list[str], rows: list[list]) -> str:
    cells = [columns] + [[str(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = [title] if title else []
    for j, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


class _LibraryLogs(logging.StreamHandler):
    """The process's root log handler: third-party records below its level are dropped. Without a
    stream of its own it writes to the current ``sys.stderr`` (tests swap it)."""

    def __init__(self, stream: IO | None = None):
        super().__init__(stream)  # StreamHandler stores sys.stderr when given None
        self._own = stream

    @property
    def stream(self):
        return self._own or sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        self._own = value


def quiet_libraries(level: int, stream: IO | None = None) -> None:
    """Keep other libraries' log records and Python warnings out of the user's output unless asked.

    Reporter level 1 (default) and 0: only their errors; -v (2): their warnings too; -vv (3): their
    info logs. A root handler is installed first, so a library that calls ``logging.basicConfig``
    when imported (onnxruntime's int4 quantizer does, at INFO) adds no handler of its own, and
    records such as onnx_ir's "The model is invalid but we will still create a new input" stop here.
    """
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _LibraryLogs)]:
        root.removeHandler(h)
    handler = _LibraryLogs(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.ERROR if level < 2 else logging.WARNING if level == 2 else logging.INFO)
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, handler.level))
    if level < 2:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"slmkit(\.|$)")


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
