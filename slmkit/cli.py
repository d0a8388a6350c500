"""The `slmkit` command line. Commands parse and dispatch; the work lives in plain functions.

Exit codes: 0 success, 1 runtime failure, 2 invalid recipe / usage / input, 3 a benchmark gate failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from slmkit.errors import SlmkitError
from slmkit.stages import STAGE_KINDS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a large language model into a small, fast one: distill, prune, quantize, "
                       "export and benchmark, driven by YAML recipes.")

RecipeArg = Annotated[Path, typer.Argument(help="The recipe YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: key.path=value "
                                                     "(repeatable), applied before validation.")]
OutOpt = Annotated[Path | None, typer.Option("--output-dir", help="Artifact store root (overrides output_dir).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Ignore cached artifacts: make new versions.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Validate, resolve inputs and print the plan; run nothing.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout; logs go to stderr.")]
VerboseOpt = Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logs.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors.")]
InputOpt = Annotated[Path | None, typer.Option("--input", help="Artifact directory to use as the stage input "
                                                  "(default: the latest matching artifact).")]


def _reporter(as_json: bool, verbose: int, quiet: bool):
    from slmkit.progress import Reporter

    return Reporter(sys.stderr if as_json else sys.stdout, level=0 if quiet else 1 + verbose)


def _fail(e: SlmkitError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _execute(recipe_path: Path, kind: str | None, overrides, output_dir, force, dry_run, as_json,
             verbose, quiet, input_path=None) -> None:
    from slmkit import commands

    reporter = _reporter(as_json, verbose, quiet)
    try:
        result = commands.execute(recipe_path, kind=kind, overrides=overrides or [], output_dir=output_dir,
                                  force=force, dry_run=dry_run, input_path=input_path, reporter=reporter)
    except SlmkitError as e:
        if as_json and getattr(e, "result", None):
            typer.echo(json.dumps(e.result, indent=2, default=str))
        _fail(e)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def run(recipe: RecipeArg, set_: SetOpt = None, output_dir: OutOpt = None, force: ForceOpt = False,
        dry_run: DryOpt = False, as_json: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False):
    """Run every stage of a recipe, reusing cached artifacts."""
    _execute(recipe, None, set_, output_dir, force, dry_run, as_json, verbose, quiet)


def _stage_command(kind: str):
    def command(recipe: RecipeArg, set_: SetOpt = None, output_dir: OutOpt = None, force: ForceOpt = False,
                dry_run: DryOpt = False, as_json: JsonOpt = False, verbose: VerboseOpt = 0,
                quiet: QuietOpt = False, input_path: InputOpt = None):
        _execute(recipe, kind, set_, output_dir, force, dry_run, as_json, verbose, quiet, input_path)

    command.__doc__ = (f"Run only the recipe's {kind} stage(s), reading the latest matching artifact "
                       "or --input.")
    return command


for _kind in STAGE_KINDS:
    app.command(name=_kind)(_stage_command(_kind))


@app.command()
def validate(recipe: RecipeArg, set_: SetOpt = None, as_json: JsonOpt = False):
    """Check a recipe and report every problem at once (exit 2 if any)."""
    from slmkit.recipe import load_recipe

    try:
        loaded = load_recipe(recipe, set_ or [])
    except SlmkitError as e:
        if as_json:
            typer.echo(json.dumps({"valid": False, "problems": getattr(e, "problems", [str(e)])}, indent=2))
        _fail(e)
    if as_json:
        typer.echo(json.dumps({"valid": True, "name": loaded.name, "stages": [s.name for s in loaded.stages]}))
    else:
        typer.echo(f"{recipe}: valid ({len(loaded.stages)} stages: {', '.join(s.name for s in loaded.stages)})")


@app.command()
def runs(directory: Annotated[Path, typer.Argument(help="Artifact store root or one recipe's folder.")] = Path("runs"),
         as_json: JsonOpt = False):
    """List artifacts: version, stage, parent, size, key metrics."""
    from slmkit import commands

    rows = commands.list_artifacts(directory)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from slmkit.progress import Reporter

    def cache(r):  # students name the teacher cache they were trained from, a cache its students
        return r["teacher_cache"] or ("used by " + ", ".join(r["used_by"]) if r.get("used_by") else "-")

    Reporter().table(f"artifacts under {directory}", ["id", "stage", "kind", "parent", "teacher cache", "size",
                                                      "metrics"],
                     [[r["id"], r["stage"], r["kind"], r["parent"] or "-", cache(r), r["size"], r["metrics"]]
                      for r in rows])


@app.command()
def show(artifact: Annotated[Path, typer.Argument(help="An artifact directory (runs/<recipe>/<stage>/v<N>).")],
         as_json: JsonOpt = False):
    """Print an artifact's manifest and lineage."""
    from slmkit import commands

    try:
        text = commands.show_artifact(artifact, as_json=as_json)
    except SlmkitError as e:
        _fail(e)
    typer.echo(text)


@app.command()
def init(path: Annotated[Path, typer.Argument(help="Where to write the starter recipe.")] = Path("recipe.yaml"),
         force: ForceOpt = False):
    """Write a starter recipe (the quickstart, commented) to PATH."""
    from slmkit import commands

    try:
        commands.write_starter(path, force=force)
    except SlmkitError as e:
        _fail(e)
    typer.echo(f"wrote {path}; check it with `slmkit validate {path}`, run it with `slmkit run {path}`")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A benchmark artifact or a recipe's run folder.")]):
    """Re-render report.md / report.html from results.json without measuring again."""
    from slmkit import commands

    try:
        typer.echo(f"wrote {commands.rerender_report(run_dir)}")
    except SlmkitError as e:
        _fail(e)


@app.command()
def compare(a: Annotated[Path, typer.Argument(help="First results.json or benchmark artifact.")],
            b: Annotated[Path, typer.Argument(help="Second results.json or benchmark artifact.")],
            out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the HTML page "
                                                        "(default: compare.html in the current directory).")] = None):
    """Print two benchmark results side by side and write them as an HTML page."""
    from slmkit import commands

    try:
        typer.echo(commands.compare_results(a, b, out))
    except SlmkitError as e:
        _fail(e)


def main() -> None:
    # tqdm reads TQDM_* variables when it is first imported, so this must precede every import of
    # transformers/datasets; slmkit's own progress replaces their bars (shown again with -vvv)
    if not any(a.startswith("-vvv") for a in sys.argv):
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing partial was committed; rerun the same command to resume", err=True)
        sys.exit(130)
