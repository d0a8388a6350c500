"""Token alignment across tokenizers: markers, shared vocabularies, positions of known strings.

The two real tokenizers are the embedded SmolLM2's byte-level BPE and MiniLM's WordPiece
vocabulary (both shipped in packages, no network).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from slmkit.distill import cross_data as X
from slmkit.distill.alignment import Anchor, Pair, align, common_span, normalize_token, shared_tokens
from slmkit.errors import InputError

CHAT = SimpleNamespace(format="chat", messages_field="messages")
ANSWER = "Hello, world! Tokenizers differ."
ROW = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": ANSWER}]}


@pytest.fixture(scope="module")
def bpe(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def wordpiece(bpe):
    from transformers import AutoTokenizer

    from slmkit.models import builtin_path

    try:
        path = builtin_path("builtin:all-minilm-l6-v2")
    except InputError as e:
        pytest.skip(str(e))
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = bpe.chat_template  # WordPiece ships none; the same template, another vocabulary
    return tok


@pytest.mark.parametrize(("piece", "scheme", "text"), [
    ("\u0120hello", "byte_level", " hello"), ("\u010a", "byte_level", "\n"), ("\u00e2\u0122", "byte_level", None),
    ("\u2581hello", "sentencepiece", " hello"), ("<0x0A>", "sentencepiece", "\n"),
    ("##izer", "wordpiece", "izer"), ("hello", "wordpiece", " hello"), ("abc", "plain", "abc"),
])
def test_markers_are_normalised_to_the_text_a_piece_stands_for(piece, scheme, text):
    assert normalize_token(piece, scheme) == text


def test_shared_tokens_match_exact_strings_once_and_special_tokens_literally():
    teacher = {"\u0120the": 0, "the": 1, "\u0120a": 2, "<|im_end|>": 3, "x": 4}
    student = {"the": 0, "##the": 1, "a": 2, "<|im_end|>": 3, "[SEP]": 4, "##x": 5, "##y": 6}
    got = shared_tokens(teacher, "byte_level", student, "wordpiece", teacher_special={"<|im_end|>"},
                        student_special={"<|im_end|>", "[SEP]"})
    # " the" <-> "the" (a word start), "the" <-> "##the", " a" <-> "a", the end tag, "x" <-> "##x"
    assert got == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 5)]
    clash = shared_tokens({"\u0120a": 0, "a": 1}, "byte_level", {"\u2581a": 0, " a": 1}, "sentencepiece")
    assert clash == []  # " a" stands for two student entries: dropped, and "a" is no student string


def test_common_spans_strip_whitespace_and_keep_a_whitespace_token():
    text, anchors = "xx Hi\n\nyo", [Anchor(2, 9, 100)]
    assert common_span(text, (2, 5), anchors) == (101, 103)  # " Hi" -> "Hi"
    assert common_span(text, (5, 7), anchors) == (103, 105)  # "\n\n" keeps its own span
    assert common_span(text, (0, 2), anchors) is None  # outside the answer


def test_a_known_string_aligns_position_by_position(bpe, wordpiece):
    def spans(tok):
        enc = tok(ANSWER, add_special_tokens=False, return_offsets_mapping=True)
        return [common_span(ANSWER, tuple(o), [Anchor(0, len(ANSWER), 0)]) for o in enc["offset_mapping"]]

    # BPE:       Hello , Ġworld ! ĠToken izers Ġdiffer .
    # WordPiece: hello , world ! token ##izer ##s differ .
    s, t = spans(wordpiece), spans(bpe)
    assert align(s, [1] * len(s), t) == [
        Pair(0, 0, True), Pair(1, 1, True), Pair(2, 2, True), Pair(3, 3, True),
        Pair(4, 4, False),  # "##izer" starts where "izers" starts, ends before it
        # "##s" (position 5 -> token 6) starts inside "izers": not aligned
        Pair(6, 5, True), Pair(7, 6, True),
    ]


def test_a_chat_row_aligns_the_answer_and_its_end_tag_under_each_template(bpe, wordpiece):
    ex = X.paired_example(ROW, CHAT, bpe, wordpiece, 512, "row 1")
    s_tok, t_tok = wordpiece.convert_ids_to_tokens(ex.input_ids), bpe.convert_ids_to_tokens(ex.teacher_ids)
    got = [(s_tok[p.student + 1], t_tok[p.teacher + 1], p.exact) for p in ex.pairs]
    assert got == [("hello", "Hello", True), (",", ",", True), ("world", "\u0120world", True), ("!", "!", True),
                   ("token", "\u0120Token", True), ("##izer", "izers", False), ("differ", "\u0120differ", True),
                   (".", ".", True), ("<", "<|im_end|>", True)]  # the end tags stand for "the answer ends"
    assert all(ex.loss_mask[p.student + 1] for p in ex.pairs)
    prompt = bpe.apply_chat_template(ROW["messages"][:1], add_generation_prompt=True, tokenize=False)
    assert ex.teacher_prompt_ids == bpe(prompt, add_special_tokens=False)["input_ids"]
    summary = X.alignment_summary([ex])
    assert summary["aligned_positions"] == 9 and 0 < summary["one_to_one_fraction"] < summary["aligned_fraction"] < 1


def test_identical_tokenizers_align_every_answer_token_one_to_one(bpe):
    ex = X.paired_example(ROW, CHAT, bpe, bpe, 512, "row 1")
    assert ex.input_ids == ex.teacher_ids
    assert all(p.exact and p.student == p.teacher for p in ex.pairs)
    counted = [k for k in range(1, len(ex.loss_mask)) if ex.loss_mask[k]]
    # every counted token but the newline after <|im_end|> (template text, not answer text)
    assert [p.student + 1 for p in ex.pairs] == counted[:-1]


def test_completions_align_with_eos_as_the_end_slot(bpe, wordpiece):
    spec = SimpleNamespace(format="prompt_completion", prompt_field="prompt", completion_field="completion")
    import copy

    wordpiece = copy.deepcopy(wordpiece)
    wordpiece.eos_token = "[SEP]"
    ex = X.paired_example({"prompt": "Say it:", "completion": " Tokenizers differ."}, spec, bpe, wordpiece, 64, "r")
    last = ex.pairs[-1]
    assert ex.input_ids[last.student + 1] == wordpiece.eos_token_id
    assert ex.teacher_ids[last.teacher + 1] == bpe.eos_token_id and last.exact


def test_a_template_that_cannot_render_the_conversation_is_an_input_error(bpe, wordpiece):
    import copy

    refusing = copy.deepcopy(wordpiece)
    refusing.chat_template = "{{ raise_exception('user turns only') }}"
    with pytest.raises(InputError, match="row 7: the student's chat template cannot render"):
        X.paired_example(ROW, CHAT, bpe, refusing, 512, "row 7")
    rewriting = copy.deepcopy(wordpiece)
    rewriting.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(InputError, match="does not render an assistant turn verbatim"):
        X.paired_example(ROW, CHAT, bpe, rewriting, 512, "row 7")


def test_packed_text_and_rows_with_nothing_aligned_are_refused(bpe, wordpiece):
    with pytest.raises(InputError, match="format text"):
        X.paired_example({"text": "x"}, SimpleNamespace(format="text"), bpe, wordpiece, 64, "r")
    ex = X.paired_example(ROW, CHAT, bpe, wordpiece, 512, "row 1")
    ex.pairs = []
    with pytest.raises(InputError, match="align cannot align any position of data.train"):
        X.keep_aligned([ex], "align", "data.train")
