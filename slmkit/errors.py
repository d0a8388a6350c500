"""Errors that map to the CLI's exit codes.

0 success, 1 runtime failure, 2 invalid recipe, usage or input, 3 a benchmark gate failed.
Code raises these with a message a user can act on: the file, the key and what was expected.
"""

from __future__ import annotations


class SlmkitError(Exception):
    """A failure while running: exit code 1."""

    exit_code = 1


class InputError(SlmkitError):
    """Bad input caught before work starts (recipe, data, model, usage): exit code 2."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe that does not validate. Carries every problem found, not just the first."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the recipe:\n{lines}")


class GateFailed(SlmkitError):
    """A benchmark gate missed its threshold: exit code 3, raised by the pipeline after the report
    artifact is committed (the benchmark stage hands its gate verdicts back as data)."""

    exit_code = 3
