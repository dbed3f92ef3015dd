"""Token categories for Fig. 4, from decoded token text (so it works for any tokenizer).

Each token is classified by its own text and, for letters, by the word it sits in (the maximal run of
letters around it in the decoded response), because sub-word and character tokenizers split words:

- ``format``: whitespace, punctuation and brackets (``. , ; : ! ? | ( ) [ ] { } " ' ` ``), the pieces of
  ``\\boxed``, answer markers and template words (answer, so, thus, therefore, final, step, columns,
  the, is, ...), markdown (``#``, ``*``, ``-`` bullets, ``>``), arrows (``->``, ``=>``), special tokens.
- ``number``: digits (and tokens whose text is a number).
- ``operator``: math operators and symbols (``+ - * / = ^ < > % \\times \\frac \\sqrt`` and other LaTeX
  math commands), unless they are part of an arrow.
- ``word``: every other alphabetic token.
- ``decision``: the token that starts a route heading of the toy's task (``tasks/fork.py``: ``carrying:``, ``places:``,
  ``rounding:``): the route-choice token (the rest of the word is ``format``).
The rules are fixed in advance and not tuned to any result.
"""

from __future__ import annotations

import re

from ..tasks.fork import ROUTE_RE

CATEGORIES = ("format", "number", "operator", "word", "decision")
TEMPLATE_WORDS = {
    "answer", "answers", "ans", "so", "thus", "therefore", "hence", "final", "step", "steps", "columns", "column", "by",
    "the", "is", "are", "let", "lets", "let's", "s", "we", "add", "work", "sum", "boxed", "box", "result", "solution",
    "first", "next", "then", "finally", "now", "note", "that", "this", "to", "of", "and", "a", "an", "in", "for",
    "text", "textbf", "mathrm", "begin", "end", "align", "aligned", "think",
}
MATH_COMMANDS = {"frac", "dfrac", "tfrac", "sqrt", "times", "cdot", "div", "pm", "mp", "le", "leq", "ge", "geq", "neq",
                 "approx", "equiv", "sum", "prod", "int", "log", "ln", "sin", "cos", "tan", "pi", "infty", "binom",
                 "left", "right", "circ", "angle", "triangle", "alpha", "beta", "theta", "lambda", "mu", "sigma"}
OPERATOR_CHARS = set("+-*/=^<>%")
FORMAT_CHARS = set(".,;:!?|()[]{}\"'`#\\_&~@$")


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"[A-Za-z']+", text)]


def classify_tokens(pieces: list[str], special: set[str] = frozenset()) -> list[str]:
    """Categories for the consecutive decoded pieces of one response."""
    text = "".join(pieces)
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos)
        pos += len(p)
    spans = word_spans(text)
    out = []
    for piece, start in zip(pieces, starts):
        out.append(_classify(piece, start, text, spans, special))
    return out


def _enclosing_word(start: int, end: int, spans) -> tuple[int, int] | None:
    for a, b in spans:
        if a <= start < b or a < end <= b:
            return a, b
    return None


def _classify(piece: str, start: int, text: str, spans, special) -> str:
    s = piece.strip()
    end = start + len(piece)
    if piece in special or not s:
        return "format"
    if re.fullmatch(r"[0-9]+([.,][0-9]+)?", s):
        return "number"
    if re.search(r"[A-Za-z]", s):
        span = _enclosing_word(start, end, spans)
        a, b = span if span else (start, end)
        word = text[a:b].lower()
        if a > 0 and text[a - 1] == "\\":  # a LaTeX command: \frac is math, \boxed / \text are format
            return "operator" if word in MATH_COMMANDS else "format"
        if ROUTE_RE.match(text, a):  # a toy route heading: its first token chooses the route
            return "decision" if start <= a < end else "format"
        return "format" if word in TEMPLATE_WORDS else "word"
    around = text[max(0, start - 1) : end + 1]
    if "->" in around or "=>" in around:
        return "format"
    if s in ("-", "*", "#", ">") and (start == 0 or text[start - 1] == "\n"):
        return "format"  # markdown bullet / heading / quote at line start
    if set(s) & OPERATOR_CHARS:
        return "operator"
    return "format"
