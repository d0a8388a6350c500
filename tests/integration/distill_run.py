"""Runs one tiny distillation in its own process (for the kill -9 and multi-process tests).

    python tests/integration/distill_run.py '{"tmp": DIR, "out": FILE, "cfg": {...}, "step_sleep": 0.0}'
"""

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from distill_helpers import job

from slmkit.distill.trainer import train


class SlowReporter:
    """A reporter whose progress bar waits after each step, so a test can kill mid-run."""

    def __init__(self, sleep: float):
        self.sleep = sleep

    def info(self, msg):
        print(msg, flush=True)

    def warn(self, msg):
        print(msg, flush=True)

    @contextlib.contextmanager
    def progress(self, total, description):
        yield self

    def advance(self, n=1, **fields):
        print(json.dumps(fields), flush=True)
        time.sleep(self.sleep)


def main():
    args = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    j = job(Path(args["tmp"]), **args["cfg"])
    j.reporter = SlowReporter(args.get("step_sleep", 0.0))
    result = train(j)
    from accelerate import PartialState

    if PartialState().is_main_process:
        torch.save({k: v.clone() for k, v in j.student.state_dict().items()}, args["out"])
        Path(args["out"] + ".json").write_text(json.dumps({"final": result.final, "resumed": result.resumed_from}))


if __name__ == "__main__":
    main()
