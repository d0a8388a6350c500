"""What the CLI commands do, as plain functions that tests and other programs can call."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

from slmkit.artifacts import MANIFEST, dir_size, lineage, read_manifest
from slmkit.errors import InputError
from slmkit.progress import Reporter


def execute(recipe_path: Path, *, kind: str | None, overrides: list[str], output_dir: Path | None, force: bool,
            dry_run: bool, input_path: Path | None, reporter: Reporter) -> dict:
    """Validate, then plan (``dry_run``) or run the recipe (or only its stages of ``kind``)."""
    from slmkit.pipeline import RunOptions, plan_recipe, run_recipe
    from slmkit.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    _quiet_libraries(reporter.level)
    opts = RunOptions(recipe_path=Path(recipe_path), output_dir=output_dir, force=force, only_kind=kind,
                      input_override=input_path)
    if kind and not any(s.kind == kind for s in recipe.stages):
        raise InputError(f"{recipe_path}: the recipe has no `{kind}` stage (stages: "
                         f"{', '.join(s.kind for s in recipe.stages)})")
    if dry_run:
        rows = plan_recipe(recipe, opts)
        reporter.table(f"plan for {recipe.name} (dry run: nothing runs)",
                       ["stage", "kind", "input", "output", "params", "est. memory GB", "notes"],
                       [[r["stage"], r["kind"], r["input"], r["output"], f"{r['params'] / 1e6:.1f}M",
                         r["memory_gb"], r["notes"]] for r in rows])
        return {"recipe": recipe.name, "dry_run": True, "plan": rows}
    try:
        results = run_recipe(recipe, opts, reporter)
    except Exception as e:
        e.result = _result_for_error(recipe, opts)
        raise
    return _summary(recipe, results, reporter)


def _quiet_libraries(level: int) -> None:
    """Our own progress replaces the libraries' bars and logs: their warnings show with -v, their
    info logs with -vv (tqdm bars with -vvv, see cli.main)."""
    from slmkit.progress import quiet_libraries

    quiet_libraries(level)
    if level >= 3:
        return
    from transformers.utils import logging as hf_logging

    if level < 2:
        hf_logging.set_verbosity_error()
    else:
        hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()


def _summary(recipe, results, reporter: Reporter) -> dict:
    reporter.table(f"{recipe.name}: artifacts", ["stage", "kind", "artifact", "cached"],
                   [[r.name, r.kind, str(r.path), "yes" if r.cached else "no"] for r in results])
    bench = [r for r in results if r.kind == "benchmark"]
    if bench and (bench[-1].path / "results.json").exists():
        results = json.loads((bench[-1].path / "results.json").read_text())
        headline = results.get("headline") or {}
        reporter.table("headline: the final artifact against the teacher", ["figure", "value"],
                       [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in headline.items()])
        reporter.info(f"report: {bench[-1].path / 'report.html'} (also report.md, results.json)")
        return results
    return {"recipe": recipe.name, "stages": [{"name": r.name, "kind": r.kind, "path": str(r.path),
                                               "cached": r.cached, "metrics": r.manifest.get("metrics", {})}
                                              for r in results]}


def _result_for_error(recipe, opts) -> dict | None:
    """A failed gate still wrote a report: --json prints it before exiting 3."""
    from slmkit.pipeline import store_for

    for stage in reversed(recipe.stages):
        latest = store_for(recipe, opts).latest(stage.name)
        if stage.kind == "benchmark" and latest and (latest / "results.json").exists():
            return json.loads((latest / "results.json").read_text())
    return None


def list_artifacts(directory: Path) -> list[dict]:
    rows = []
    for manifest_path in sorted(Path(directory).rglob(MANIFEST)):
        path = manifest_path.parent
        if any(part in (".tmp", ".work") for part in path.parts):
            continue
        try:
            m = read_manifest(path)
        except InputError:
            continue
        parents = [i.get("id") for i in m.get("inputs", []) if i.get("role") == "input"]
        metrics = {k: v for k, v in (m.get("metrics") or {}).items() if isinstance(v, (int, float))}
        cache = ((m.get("details") or {}).get("teacher_cache") or {}).get("train")
        rows.append({"id": m.get("id"), "path": str(path), "stage": m.get("stage"), "kind": m.get("kind"),
                     "version": m.get("version"), "parent": parents[0] if parents else None,
                     "size": _human(dir_size(path)), "metrics": _short_metrics(metrics), "teacher_cache": cache})
    return _cache_users(rows)


def _cache_users(rows: list[dict]) -> list[dict]:
    """Give each teacher cache the students trained from it (a cache is shared across recipes)."""
    users: dict[str, list[str]] = {}
    for r in rows:
        if r["teacher_cache"]:
            users.setdefault(r["teacher_cache"], []).append(r["id"])
    for r in rows:
        if r["id"] in users:
            r["used_by"] = users[r["id"]]
    return rows


def _short_metrics(metrics: dict, most: int = 4) -> str:
    items = list(metrics.items())[:most]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items) or "-"


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def show_artifact(path: Path, *, as_json: bool) -> str:
    manifest = read_manifest(path)
    chain = lineage(path)
    if as_json:
        return json.dumps({"manifest": manifest, "lineage": chain}, indent=2, default=str)
    lines = [f"{manifest.get('id')}  ({manifest.get('kind')}, {_human(dir_size(Path(path)))})",
             "lineage: " + " <- ".join(str(c["id"]) for c in chain), "", json.dumps(manifest, indent=2, default=str)]
    return "\n".join(lines)


def write_starter(path: Path, *, force: bool) -> None:
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")
    text = (Path(__file__).parent / "data_files" / "starter.yaml").read_text()
    # the first line names the command that runs the recipe: point it at the file just written
    path.write_text(text.replace("slmkit run recipes/quickstart.yaml", f"slmkit run {path}", 1))


def rerender_report(path: Path) -> Path:
    from slmkit.benchmark.report import render_report

    return render_report(_results_dir(path))


def compare_results(a: Path, b: Path, out: Path | None = None) -> str:
    """The table of A and B (drawn by rich on a terminal, plain full-width lines in a pipe), and the same
    rows as an HTML page (``out``, else ./compare.html)."""
    from rich.console import Console

    from slmkit.benchmark.compare import compare, write_compare
    from slmkit.progress import table_text

    table = compare(_results_dir(a), _results_dir(b))
    if sys.stdout.isatty():
        console = Console(record=True, file=io.StringIO(), width=shutil.get_terminal_size().columns)
        console.print(table)
        text = console.export_text()
    else:
        text = table_text(table) + "\n"
    page = write_compare(_results_dir(a), _results_dir(b), Path(out) if out else Path("compare.html"))
    return text + f"wrote {page}\n"


def _results_dir(path: Path) -> Path:
    """A benchmark artifact holding results.json, given it, its results.json, or a run folder."""
    path = Path(path)
    if path.is_file() and path.name == "results.json":
        return path.parent
    if (path / "results.json").exists():
        return path
    found = sorted(path.rglob("results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise InputError(f"{path}: no results.json found (run a benchmark stage first)")
    return found[-1].parent
