"""Artifact store: atomic commits (a killed writer leaves nothing visible), versions, cache lookups."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from slmkit.artifacts import (
    MANIFEST,
    Store,
    content_hash,
    file_hashes,
    lineage,
    read_manifest,
    safe_component,
)
from slmkit.errors import InputError


def _commit(store: Store, stage: str, key: str, payload: bytes = b"weights", inputs=()) -> object:
    tmp = store.begin(stage)
    (tmp / "model.bin").write_bytes(payload)
    return store.commit(stage, tmp, {"stage": stage, "kind": "prune", "cache_key": key, "inputs": list(inputs)})


def test_commit_versions_and_manifest(tmp_path):
    store = Store(tmp_path / "demo")
    a = _commit(store, "prune", "k1", b"one")
    b = _commit(store, "prune", "k2", b"two")
    assert [a.name, b.name] == ["v1", "v2"]
    m = read_manifest(b)
    assert m["id"] == "demo/prune/v2" and m["version"] == 2
    assert m["files"] == {"model.bin": __import__("hashlib").sha256(b"two").hexdigest()}
    assert m["content_hash"] == content_hash(file_hashes(b)) and m["size_bytes"] == 3
    assert (b / "README.md").read_text().startswith("# demo/prune/v2")
    assert store.latest("prune") == b and store.versions("prune") == [a, b]
    assert not list((tmp_path / "demo" / ".tmp").iterdir())


def test_cache_lookup_by_key(tmp_path):
    store = Store(tmp_path / "demo")
    first = _commit(store, "prune", "same")
    _commit(store, "prune", "other")
    assert store.find_cached("prune", "same") == first
    assert store.find_cached("prune", "missing") is None


def test_dataset_built_once(tmp_path):
    store = Store(tmp_path / "demo")
    calls = []

    def build(out):
        calls.append(out)
        (out / "rows.jsonl").write_text('{"a": 1}\n')
        return {"rows": 1}

    p1 = store.dataset("teacher_gen", {"model": "x", "n": 1}, build)
    p2 = store.dataset("teacher_gen", {"model": "x", "n": 1}, build)
    p3 = store.dataset("teacher_gen", {"model": "x", "n": 2}, build)
    assert p1 == p2 and p3 != p1 and len(calls) == 2
    assert read_manifest(p1)["metrics"] == {"rows": 1}


def test_failed_build_leaves_nothing(tmp_path):
    store = Store(tmp_path / "demo")

    def build(out):
        (out / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.dataset("gen", {"k": 1}, build)
    assert store.versions("gen") == [] and not list((tmp_path / "demo" / ".tmp").iterdir())


WRITER = """
import sys, time
from pathlib import Path
from slmkit.artifacts import Store
store = Store(Path(sys.argv[1]))
tmp = store.begin("distill")
with open(tmp / "model.safetensors", "wb") as f:
    for _ in range(10_000):
        f.write(b"x" * 4096)
        f.flush()
        print("writing", flush=True)
        time.sleep(0.01)
store.commit("distill", tmp, {"stage": "distill", "kind": "distill", "cache_key": "k"})
"""


def test_killed_writer_leaves_no_partial_version(tmp_path):
    root = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        proc.stdout.readline()  # the writer is mid-file
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(root)
    assert store.versions("distill") == [] and not (root / "distill").exists()
    leftovers = list((root / ".tmp").iterdir())
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").stat().st_size > 0
    assert store.clean_stale() == leftovers and not list((root / ".tmp").iterdir())


def test_live_writer_tmp_is_kept(tmp_path):
    store = Store(tmp_path / "demo")
    tmp = store.begin("prune")  # this process is alive
    assert store.clean_stale() == [] and tmp.exists()


def test_lineage_follows_inputs(tmp_path):
    store = Store(tmp_path / "demo")
    src = _commit(store, "source", "s")
    pruned = _commit(store, "prune", "p", inputs=[{"role": "input", "path": str(src), "id": "demo/source/v1"}])
    tuned = _commit(store, "distill", "d", inputs=[{"role": "input", "path": str(pruned)}])
    assert [c["id"] for c in lineage(tuned)] == ["demo/distill/v1", "demo/prune/v1", "demo/source/v1"]


@pytest.mark.parametrize("name", ["../x", "/abs", ".hidden", "a/b", "..", ""])
def test_escaping_names_rejected(name):
    with pytest.raises(InputError):
        safe_component(name, "stage name")


def test_corrupted_manifest_is_input_error(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="corrupted"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match="not an slmkit artifact"):
        read_manifest(tmp_path / "nowhere")
