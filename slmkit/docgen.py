"""Generate docs/recipes.md from the schema's field descriptions: `python -m slmkit.docgen > docs/recipes.md`."""

from __future__ import annotations

import typing
from typing import get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _models_in(annotation) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (Optional[X], list[X], Annotated[Union[...]])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out = []
    for arg in get_args(annotation):
        out += _models_in(arg)
    return out


def _type_name(annotation) -> str:
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in get_args(annotation))}]"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        return "(section defaults)" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default}`"


def _section(title: str, model: type[BaseModel], seen: set, out: list[str]) -> None:
    if model in seen:
        return
    seen.add(model)
    out += [f"### `{title}` ({model.__name__})", ""]
    if model.__doc__ and not model.__doc__.startswith(("A base class", "Usage docs")):
        out += [model.__doc__.strip().split("\n\n")[0].replace("\n", " "), ""]
    out += ["| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        nested += [(f"{title}.{key}", m) for m in _models_in(field.annotation) if m.__name__ != "StageSpec"]
    out.append("")
    for sub_title, sub in nested:
        _section(sub_title, sub, seen, out)


def recipe_reference() -> str:
    from slmkit.recipe import Recipe
    from slmkit.stages import STAGE_KINDS

    out = ["# Recipe reference", "",
           "Generated from the schema by `python -m slmkit.docgen > docs/recipes.md`; a test keeps it current.",
           "Unknown keys are errors. Strings may use `${ENV_VAR}`. Any key can be overridden on the command "
           "line with `--set key.path=value` (stages by index, name or kind: `--set stages.prune.keep_layers=8`).",
           "", "## Top level", ""]
    seen: set = set()
    _section("recipe", Recipe, seen, out)
    out += ["## Stages", "",
            "Each entry of `stages` is a one-key mapping `{<kind>: {...}}`. Every kind also takes `name` "
            "(default: the kind, then `<kind>_2`, ...) and `input` (an earlier stage's name or an artifact "
            "directory; default: the previous stage).", ""]
    for kind, cfg in ((k, s.config_type()) for k, s in STAGE_KINDS.items()):
        models = _models_in(cfg)
        out += [f"## `{kind}`", ""]
        if len(models) > 1:
            out += ["Methods, chosen by `method:`: " + ", ".join(
                f"`{m.model_fields['method'].annotation.__args__[0]}`" for m in models), ""]
        for m in models:
            label = m.model_fields["method"].annotation.__args__[0] if len(models) > 1 else None
            _section(f"{kind}" + (f" method={label}" if label else ""), m, seen, out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(recipe_reference(), end="")
