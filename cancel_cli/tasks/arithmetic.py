"""The toy task: column addition of 2-3 digit operands, answered in ``\\boxed{N}``.

Responses vary their *scaffold* (opening phrase, step format, separator, closing phrase) at random and
independently of correctness, so scaffold tokens carry real entropy while digits carry the reasoning
(real LLM rollouts differ in wording as well as in reasoning; the paper's Fig. 1d and Fig. 4 are about
that mix).  Example responses for 347+285:

    Add by columns: 7+5+0=12; 4+8+1=13; 3+2+1=6. So the answer is \\boxed{632}
    7+5+0=12, 4+8+1=13, 3+2+1=6 -> \\boxed{632}
"""

from __future__ import annotations

import random

from . import Problem

OPENINGS = ["", "Add by columns: ", "Columns: ", "Let's add column by column. ", "Work: "]
STEP_FORMATS = ["{a}+{b}+{c}={s}", "{a}+{b}+{c} = {s}", "{a}+{b}+{c}->{s}"]
SEPARATORS = ["; ", ", ", " | ", "\n"]
CLOSINGS = [". So the answer is ", " -> ", ". Answer: ", "\nThus ", ", so the sum is "]


def toy_prompt(a: int, b: int) -> str:
    """The toy's prompt template (the toy is a base model: plain text, no chat template)."""
    return f"Add {a}+{b}.\n"


def column_steps(a: int, b: int) -> list[tuple[int, int, int, int]]:
    """(digit_a, digit_b, carry_in, column_sum) per column, least significant first."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append((x, y, carry, s))
        carry = s // 10
    return steps


def toy_response(a: int, b: int, rng: random.Random, working: bool = True) -> str:
    """A correct response with a randomly drawn scaffold."""
    opening = rng.choice(OPENINGS) if working else ""
    closing = rng.choice(CLOSINGS)
    body = ""
    if working:
        fmt, sep = rng.choice(STEP_FORMATS), rng.choice(SEPARATORS)
        body = sep.join(fmt.format(a=x, b=y, c=c, s=s) for x, y, c, s in column_steps(a, b))
    else:
        closing = closing.lstrip(". ,\n").capitalize() if closing.strip() != "->" else ""
    return f"{opening}{body}{closing}\\boxed{{{a + b}}}"


def sample_operands(rng: random.Random, digits: tuple[int, ...] = (2, 3)) -> tuple[int, int]:
    da, db = rng.choice(digits), rng.choice(digits)
    return rng.randint(10 ** (da - 1), 10**da - 1), rng.randint(10 ** (db - 1), 10**db - 1)


def toy_problems(n: int, seed: int, digits: tuple[int, ...] = (2, 3), split: str = "train") -> list[Problem]:
    """``n`` seeded toy problems.  Each split draws from its own RNG stream (train / heldout / eval);
    collisions between streams are rare (2-3 digit operand pairs number ~0.8M)."""
    rng = random.Random(f"{split}-{seed}-{','.join(map(str, digits))}")
    out = []
    for i in range(n):
        a, b = sample_operands(rng, digits)
        out.append(Problem(id=f"toy-{split}-{seed}-{i}", problem=toy_prompt(a, b), answer=str(a + b),
                           source=f"toy-{''.join(map(str, digits))}digit", meta={"a": a, "b": b}))
    return out
