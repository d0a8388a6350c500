"""Rows of predictive tasks: (context, item, optional label, optional group), checked on load.

Files go through slmkit.data's loader like every other split (jsonl, json, csv, parquet; hub
datasets too), and every problem names the file and row: a missing context or item, a label outside the declared
set, a verbalizer that is not one token of the tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmkit.errors import InputError

MAX_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class ScoringRow:
    context: str
    item: str
    label: int | None = None  # index into the task's declared label list, None when unlabeled
    group: str = ""  # the context's candidate list; rows of one group are ranked against each other
    source: str = ""  # "file:row" (1-based) for error messages


def load_rows(
    path: Path,
    labels: Sequence[Any],
    *,
    require_labels: bool = False,
    fields: dict[str, str] | None = None,
) -> list[ScoringRow]:
    """Read (through slmkit.data, as every split is) and validate a data file; see :func:`rows_from_records`."""
    from slmkit.data import SUFFIXES, read_local_rows

    tables = {k: v for k, v in SUFFIXES.items() if v != "text"}  # scored rows need columns
    records, where = read_local_rows(Path(path), tables)
    return rows_from_records(records, labels, source=where, require_labels=require_labels, fields=fields)


def rows_from_records(
    records: Iterable[dict[str, Any]],
    labels: Sequence[Any],
    *,
    source: str,
    require_labels: bool = False,
    fields: dict[str, str] | None = None,
) -> list[ScoringRow]:
    """Validate raw records into rows; all problems (up to 10 shown) are raised at once.

    ``fields`` maps context/item/label/group to the column names of the file. Labels are matched
    to ``labels`` by value, with "1" and 1 treated alike (csv files carry strings).
    """
    names = {"context": "context", "item": "item", "label": "label", "group": "group", **(fields or {})}
    index = {str(v): i for i, v in enumerate(labels)}
    rows, problems = [], []
    for n, rec in enumerate(records, start=1):
        where = f"{source}:{n}"
        row, problem = _row(rec, names, index, where, require_labels)
        if problem:
            problems.append(f"row {n}: {problem}")
        else:
            rows.append(row)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise InputError(f"{source}: {len(problems)} bad row(s):\n{shown}{more}")
    if not rows:
        raise InputError(f"{source}: no rows")
    return rows


def _row(rec: dict, names: dict, index: dict, where: str, require_labels: bool):
    """One validated row, or (None, the reason it is rejected)."""
    text = {}
    for key in ("context", "item"):
        value = rec.get(names[key])
        if not isinstance(value, str) or not value.strip():
            return None, f"missing or empty {key} (column {names[key]!r})"
        text[key] = value
    raw = rec.get(names["label"])
    if raw is None:
        if require_labels:
            return None, f"missing label (column {names['label']!r})"
        label = None
    else:
        key = str(int(raw)) if isinstance(raw, (bool, float)) and float(raw).is_integer() else str(raw)
        if key not in index:
            return None, f"label {raw!r} is not one of the declared labels {list(index)}"
        label = index[key]
    group = rec.get(names["group"])
    # without a group id, a context's candidates are the rows sharing its text
    group = text["context"] if group is None else str(group)
    return ScoringRow(text["context"], text["item"], label, group, where), None


def verbalizer_ids(tokenizer, verbalizers: Sequence[str]) -> list[int]:
    """Token id of each verbalizer; each must be exactly one token and they must differ.

    A multi-token answer (" Yes" splitting into " Y" + "es") would make the score the
    probability of a prefix, not of the answer, so it is refused.
    """
    ids, problems = [], []
    for v in verbalizers:
        toks = tokenizer.encode(v, add_special_tokens=False)
        if len(toks) != 1:
            pieces = tokenizer.convert_ids_to_tokens(toks)
            problems.append(f"verbalizer {v!r} is {len(toks)} tokens {pieces}, not one")
        else:
            ids.append(toks[0])
    if not problems and len(set(ids)) != len(ids):
        problems.append(f"verbalizers {list(verbalizers)} map to repeated token ids {ids}")
    if problems:
        raise InputError("task.verbalizers: " + "; ".join(problems) + " — pick answers the tokenizer keeps whole")
    return ids
