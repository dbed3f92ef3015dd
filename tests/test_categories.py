"""Token categories (Fig. 4) on hand-written decoded texts: the toy's character tokenizer and a Qwen BPE
tokenizer.  The Qwen pieces below are what Qwen2's tokenizer (qwen.tiktoken ranks, Qwen2 pre-tokenizer
regex: digits split one by one, a leading space glued to the word) produces for these texts; they are
written out so the test needs no tokenizer download.  Labels: F format, N number, O operator, W word."""

import pytest

from cancel_cli.analysis import categories
from cancel_cli.analysis.categories import classify_tokens

LABEL = {"F": "format", "N": "number", "O": "operator", "W": "word"}

QWEN_CASES = [
    (["Let", "'s", " compute", " ", "4", "7", " +", " ", "3", "8", " step", " by", " step", ".\n", "First", ",", " ",
      "7", " +", " ", "8", " =", " ", "1", "5", ",", " so", " we", " write", " ", "5", " and", " carry", " ", "1", ".\n",
      "Therefore", ",", " the", " final", " answer", " is", " \\", "boxed", "{", "8", "5", "}."],
     "FFWFNNOFNNFFFFFFFNOFNOFNNFFFWFNFWFNFFFFFFFFFFNNF"),
    (["We", " have", " $", "x", "^", "2", " -", " ", "4", " =", " ", "0", "$,", " so", " $", "x", " =", " \\", "pm", " ",
      "2", "$.", " Thus", " the", " sum", " of", " the", " roots", " is", " \\", "boxed", "{", "0", "}."],
     "FWFWONOFNOFNFFFWOFOFNFFFFFFWFFFFNF"),
    (["The", " probability", " is", " \\", "frac", "{", "3", "}{", "8", "},", " because", " there", " are", " ", "8",
      " outcomes", " and", " ", "3", " favorable", " ones", "."],
     "FWFFOFNFNFWWFFNWFFNWWF"),
]
TOY_TEXT = "Add the columns: 47 + 38. 7+8=15, write 5 carry 1. So the answer is \\boxed{85}."
TOY_LABELS = "FFFFFFFFFFFFFFFFFNNFOFNNFFNONONNFFWWWWWFNFWWWWWFNFFFFFFFFFFFFFFFFFFFFFFFFFFNNFF"


def mismatches(cases) -> list[tuple[str, str, str]]:
    """(piece, expected, got) for every piece the classifier labels differently from the hand labels."""
    out = []
    for pieces, labels in cases:
        assert len(pieces) == len(labels)
        got = classify_tokens(pieces)
        out += [(p, LABEL[e], g) for p, e, g in zip(pieces, labels, got) if LABEL[e] != g]
    return out


def test_qwen_bpe_pieces():
    assert mismatches(QWEN_CASES) == []


def test_toy_character_pieces(toy):
    pieces = [toy.tokenizer.decode([i]) for i in toy.encode(TOY_TEXT)]
    assert "".join(pieces) == TOY_TEXT and len(pieces) == len(TOY_TEXT)  # one character per token
    assert mismatches([(pieces, TOY_LABELS)]) == []


@pytest.mark.parametrize("pieces,expected", [
    ([" ->", " 5"], ["format", "number"]),  # an arrow is format, not an operator
    (["-", " item"], ["format", "word"]),  # markdown bullet at line start
    (["3", ".", "5"], ["number", "format", "number"]),
    ([" 3.5"], ["number"]),
    ([" \\", "sqrt", "{", "2", "}"], ["format", "operator", "format", "number", "format"]),
    (["<|im_end|>"], ["format"]),
])
def test_edge_cases(pieces, expected):
    assert classify_tokens(pieces, special={"<|im_end|>"}) == expected


def test_every_category_occurs_in_the_hand_written_texts():
    labels = set("".join(lab for _, lab in QWEN_CASES))
    assert {LABEL[c] for c in labels} == {"format", "number", "operator", "word"}


def test_mutation_every_token_a_word_is_detected(monkeypatch):
    monkeypatch.setattr(categories, "_classify", lambda piece, start, text, spans, special: "word")
    assert len(mismatches(QWEN_CASES)) > 50
