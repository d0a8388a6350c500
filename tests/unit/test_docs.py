"""What the README and docs show is what ships: recipes and configs quoted in them match the files."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def _subset_mismatches(shown, real, path="") -> list[str]:
    """Keys of ``shown`` whose values differ from ``real`` (lists of stages matched by position)."""
    if isinstance(shown, dict) and isinstance(real, dict):
        out = []
        for k, v in shown.items():
            out += [f"{path}.{k}: not in the file"] if k not in real else _subset_mismatches(v, real[k], f"{path}.{k}")
        return out
    if isinstance(shown, list) and isinstance(real, list) and all(isinstance(x, dict) for x in shown):
        if len(shown) != len(real):
            return [f"{path}: {len(shown)} entries shown, {len(real)} in the file"]
        return [m for i, (a, b) in enumerate(zip(shown, real)) for m in _subset_mismatches(a, b, f"{path}[{i}]")]
    return [] if shown == real else [f"{path}: shown {shown!r}, the file has {real!r}"]


def test_readme_abridged_quickstart_is_the_real_recipe():
    block = next(b for b in _yaml_blocks((ROOT / "README.md").read_text()) if "name: quickstart" in b)
    real = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
    shown = yaml.safe_load(block)
    assert _subset_mismatches(shown, real) == []
    assert [next(iter(s)) for s in shown["stages"]] == [next(iter(s)) for s in real["stages"]]


def test_subset_check_catches_a_changed_value():
    assert _subset_mismatches({"a": {"b": 1}}, {"a": {"b": 2}}) == [".a.b: shown 1, the file has 2"]


def test_distill_docs_show_the_shipped_fsdp_config():
    shipped = (ROOT / "configs/accelerate/fsdp_8gpu.yaml").read_text()
    assert shipped in _yaml_blocks((ROOT / "docs/distill.md").read_text())
