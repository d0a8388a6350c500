"""The versioned artifact store: ``<output_dir>/<recipe>/<stage>/v<N>/``.

A version is written into ``<recipe>/.tmp/<stage>.<pid>.<random>/`` and renamed into place only
when complete, so nothing half-written is ever visible as an artifact; temporary directories of
dead writers are removed on the next run. Each version holds its files, ``manifest.json`` (what
made it), ``recipe.yaml`` (the resolved recipe, parents' history appended) and ``README.md`` (a
model card). A stage whose cache key (config + input content + data + slmkit version) matches a
committed version reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from slmkit import __version__
from slmkit.errors import InputError, SlmkitError
from slmkit.machine import hardware_info, library_versions

MANIFEST = "manifest.json"
_VERSION = re.compile(r"^v(\d+)$")
_META_FILES = {MANIFEST, "README.md", "recipe.yaml"}


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root except the store's own metadata files."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and str(p.relative_to(root)) not in _META_FILES}


def content_hash(files: dict[str, str]) -> str:
    return hash_json(sorted(files.items()))


def artifact_hash(path: Path) -> str:
    """Content hash of a directory: the manifest's for artifacts (no re-reading), computed otherwise."""
    if (Path(path) / MANIFEST).exists():
        return read_manifest(path)["content_hash"]
    return content_hash(file_hashes(Path(path)))


def dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def safe_component(name: str, what: str) -> str:
    """Reject names that would escape the output directory."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith((".", "~")) \
            or os.path.isabs(name):
        raise InputError(f"{what} {name!r} is not a plain name: it must not contain '/', start with '.', "
                         "or be absolute (it names a directory inside the output directory)")
    return name


class Store:
    """The artifacts of one recipe: ``root = <output_dir>/<recipe name>``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- reading -------------------------------------------------------------------------------

    def versions(self, stage: str) -> list[Path]:
        folder = self.root / stage
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _VERSION.match(p.name))
                 and (p / MANIFEST).exists()]
        return [p for _, p in sorted(found)]

    def latest(self, stage: str) -> Path | None:
        found = self.versions(stage)
        return found[-1] if found else None

    def find_cached(self, stage: str, cache_key: str) -> Path | None:
        for path in reversed(self.versions(stage)):
            if read_manifest(path).get("cache_key") == cache_key:
                return path
        return None

    # -- writing -------------------------------------------------------------------------------

    def begin(self, stage: str) -> Path:
        safe_component(stage, "stage name")
        tmp = self.root / ".tmp" / f"{stage}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, stage: str, tmp: Path, manifest: dict, *, recipe_yaml: str = "", card: str = "") -> Path:
        """Finish the manifest, write the metadata files and rename tmp into the next version."""
        files = file_hashes(tmp)
        manifest = {**manifest, "files": files, "content_hash": content_hash(files),
                    "size_bytes": sum((tmp / f).stat().st_size for f in files)}
        (self.root / stage).mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # another writer may take a number between our look and our rename
            n = max([int(_VERSION.match(p.name).group(1)) for p in (self.root / stage).iterdir()
                     if _VERSION.match(p.name)] + [0]) + 1
            manifest.update(version=n, id=f"{self.root.name}/{stage}/v{n}")
            _write_json(tmp / MANIFEST, manifest)
            (tmp / "recipe.yaml").write_text(recipe_yaml)
            (tmp / "README.md").write_text(card or model_card(manifest))
            _fsync_tree(tmp)
            try:
                os.rename(tmp, self.root / stage / f"v{n}")
                return self.root / stage / f"v{n}"
            except OSError:
                continue
        raise SlmkitError(f"could not commit a new version of {self.root / stage}")

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def clean_stale(self) -> list[Path]:
        """Remove temporary directories whose writer process is gone."""
        removed = []
        for tmp in (self.root / ".tmp").glob("*") if (self.root / ".tmp").is_dir() else []:
            pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 2 else ""
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        return removed

    def work_dir(self, stage: str, key: str) -> Path:
        path = self.root / ".work" / f"{stage}-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def dataset(self, kind: str, key: dict, build: Callable[[Path], dict], *, reporter=None) -> Path:
        """A dataset artifact keyed by `key`: reused when committed, else built and committed."""
        cache_key = hash_json({"key": key, "slmkit": __version__})
        if found := self.find_cached(kind, cache_key):
            if reporter:
                reporter.info(f"reusing {kind} {found.name} ({found})")
            return found
        tmp = self.begin(kind)
        started = time.time()
        try:
            metrics = build(tmp) or {}
        except BaseException:
            self.abort(tmp)
            raise
        manifest = base_manifest(kind, kind, cache_key, started) | {
            "artifact_type": "dataset", "config": key, "metrics": metrics}
        return self.commit(kind, tmp, manifest)


def read_manifest(path: Path) -> dict:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is not an slmkit artifact (no {MANIFEST})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path / MANIFEST} is corrupted: {e}") from None


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _fsync_tree(root: Path) -> None:
    # flush file contents before the rename makes them visible: a crash after the rename must not
    # expose a directory whose files are still empty in the page cache
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def base_manifest(stage: str, kind: str, cache_key: str, started: float) -> dict:
    return {
        "stage": stage, "kind": kind, "cache_key": cache_key,
        "started": _iso(started), "finished": _iso(time.time()),
        "duration_s": round(time.time() - started, 3),
        "versions": library_versions(), "hardware": hardware_info(), "git_commit": git_commit(),
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def lineage(path: Path) -> list[dict]:
    """The artifact and its ancestors, newest first, following manifest inputs."""
    chain, seen = [], set()
    current = Path(path)
    while current is not None and str(current) not in seen:
        seen.add(str(current))
        manifest = read_manifest(current)
        chain.append({"id": manifest.get("id"), "path": str(current), "stage": manifest.get("stage"),
                      "kind": manifest.get("kind")})
        parents = [i for i in manifest.get("inputs", []) if i.get("role") == "input"]
        current = Path(parents[0]["path"]) if parents and (Path(parents[0]["path"]) / MANIFEST).exists() else None
    return chain


def model_card(manifest: dict, notes: list[str] = ()) -> str:
    """README.md of an artifact: what it is, where it came from, its metrics, how to load it."""
    lines = [f"# {manifest.get('id')}", "",
             f"Written by slmkit {manifest.get('versions', {}).get('slmkit')} on {manifest.get('finished')}: "
             f"stage `{manifest.get('stage')}` ({manifest.get('kind')}).", "", "## Lineage", ""]
    for inp in manifest.get("inputs", []):
        lines.append(f"- {inp.get('role', 'input')}: `{inp.get('id') or inp.get('ref')}` "
                     f"(content {inp.get('content_hash')})")
    if not manifest.get("inputs"):
        lines.append(f"- source: `{manifest.get('config', {}).get('model', 'n/a')}`")
    metrics = manifest.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    if manifest.get("artifact_type", "model") == "model":
        lines += ["", "## Load it", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  'model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")',
                  'tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")', "```"]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
