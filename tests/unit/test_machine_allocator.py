"""The training allocator settings: freed memory is reused instead of faulted in again."""

import ctypes
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from slmkit.machine import _libc, training_allocator

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc mallopt is Linux-only")


def _faults_of_reallocating(rounds: int = 3, blocks: int = 8, mb: int = 8) -> int:
    """Minor page faults while ``blocks`` blocks are malloc'ed, written, then all freed, repeatedly.

    The pattern of a training step: activations pile up in the forward and are all freed by
    the end of the backward. glibc's dynamic defaults hand the freed heap top back to the
    kernel (it exceeds twice the largest block), so every round faults its pages in again.
    """
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    n = mb * 2**20

    def once():
        ptrs = [libc.malloc(n) for _ in range(blocks)]
        for p in ptrs:
            ctypes.memset(p, 1, n)
        for p in reversed(ptrs):
            libc.free(ctypes.c_void_p(p))

    once()  # first touch: the heap grows either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        once()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from test_machine_allocator import _faults_of_reallocating
from slmkit.machine import training_allocator
before = _faults_of_reallocating()
with training_allocator() as alloc:
    assert alloc.active
    inside = _faults_of_reallocating()
assert not alloc.active
print(before, inside, _faults_of_reallocating())
"""


def test_training_allocator_reuses_freed_blocks_and_restores_the_defaults():
    # a fresh process: its heap holds nothing from other tests that could serve the blocks
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(here=str(Path(__file__).parent))],
                         capture_output=True, text=True, check=True).stdout
    before, inside, after = map(int, out.split())
    pages = 3 * 8 * 8 * 2**20 // 4096  # every block of every round
    assert before > pages // 2, (before, pages)  # glibc defaults: the freed heap top goes back
    assert inside < pages // 10, (inside, pages)
    assert after > pages // 2, (after, pages)  # the defaults are back


def test_training_allocator_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SLMKIT_MALLOC_TUNING", "0")
    with training_allocator() as alloc:
        assert not alloc.active
    with training_allocator(enabled=False) as alloc:
        assert not alloc.active
