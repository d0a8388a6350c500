"""Loading and validating predictive rows and task configs: bad input gives clear errors."""

import json

import pytest
from pydantic import ValidationError

from slmkit.errors import InputError
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import load_rows, rows_from_records, verbalizer_ids


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loads_jsonl_and_defaults_group_to_context(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"context": "q1", "item": "a", "label": 1},
        {"context": "q1", "item": "b", "label": 0},
        {"context": "q2", "item": "c", "label": 0, "group": 7},
    ])
    rows = load_rows(f, [0, 1])
    assert [(r.context, r.item, r.label, r.group) for r in rows] == [
        ("q1", "a", 1, "q1"), ("q1", "b", 0, "q1"), ("q2", "c", 0, "7")]
    assert rows[2].source == f"{f}:3"


def test_csv_string_labels_map_to_declared_order(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,candidate,y\nhello,world,pos\nhi,there,neg\n")
    rows = load_rows(f, ["neg", "pos"], fields={"context": "text", "item": "candidate", "label": "y"})
    assert [r.label for r in rows] == [1, 0]


def test_missing_item_and_bad_label_name_file_and_row(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [
        {"context": "q", "item": "a", "label": 1},
        {"context": "q", "item": None, "label": 0},
        {"context": "q", "item": "c", "label": 5},
    ])
    with pytest.raises(InputError) as err:
        load_rows(f, [0, 1])
    msg = str(err.value)
    assert "bad.jsonl" in msg and "2 bad row(s)" in msg
    assert "row 2: missing or empty item" in msg
    assert "row 3: label 5 is not one of the declared labels ['0', '1']" in msg


def test_missing_context_column_and_required_labels():
    with pytest.raises(InputError, match="row 1: missing or empty context"):
        rows_from_records([{"query": "q", "item": "a"}], [0, 1], source="mem")
    with pytest.raises(InputError, match="row 1: missing label"):
        rows_from_records([{"context": "q", "item": "a"}], [0, 1], source="mem", require_labels=True)
    rows = rows_from_records([{"context": "q", "item": "a"}], [0, 1], source="mem")
    assert rows[0].label is None


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_rows(tmp_path / "nope.jsonl", [0, 1])
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported data format"):
        load_rows(tmp_path / "d.txt", [0, 1])


class ToyTokenizer:
    """Splits on spaces; ' Yes' is one token, ' Maybe not' two."""

    def encode(self, text, add_special_tokens=False):
        return [hash(w) % 1000 for w in text.split(" ") if w] if text != " Same" else [1]

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def test_verbalizer_must_be_single_distinct_token():
    tok = ToyTokenizer()
    assert len(verbalizer_ids(tok, [" No", " Yes"])) == 2
    with pytest.raises(InputError, match="' Maybe not' is 2 tokens"):
        verbalizer_ids(tok, [" No", " Maybe not"])


def test_task_config_validation_collects_problems():
    TaskConfig()  # defaults validate
    with pytest.raises(ValidationError) as err:
        TaskConfig(kind="ranking", labels=[0, 1, 2], verbalizers=[" a"], template="{item} {context}",
                   primary_metric="f1")
    msg = str(err.value)
    for part in ("exactly two labels", "one per label", "followed later by `{item}`", "primary_metric"):
        assert part in msg
    assert TaskConfig(primary_metric="ndcg@5").primary_metric == "ndcg@5"
    with pytest.raises(ValidationError, match="extra"):
        TaskConfig(unknown=1)
