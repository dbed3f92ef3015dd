"""The toy's task (fork kind): toy-plain's prompts (``Add A+B.\\n``, 2-3 digit operands) answered by one of three
solution *routes*, chosen at a decision token early in the response (the first letter of the route word):

- ``carrying``: column addition right to left with carries (toy-plain's route; every step is written out);
- ``places``: place values left to right into a running total (each step a mental sum);
- ``rounding``: round B up to a multiple of ten, one mental sum, then compensate.

Example responses for 347+285 (wording varies at random, independently of the route and of correctness):

    Try carrying: 7+5+0=12; now 4+8+1->13, 3+2+1: 6. So \\boxed{632}
    Plan places: go 300+200->500 | next 500+40+80=620
    so 620+7+5=632 -> \\boxed{632}
    rounding: ok 285: 290-5, 347+290=637; 637-5->632. Ans: \\boxed{632}

Besides the route letter, the wording is drawn at every step, like the connectives and sentence openers an
LLM chooses between clauses: an opening, a first word, the sign of every step (``=``, ``->``, ``: ``), and
between two steps a separator and a word.  Each choice set starts with distinct characters, so a model
that learned the wording has entropy log 3 to log 4 nats there; computed exactly over this choice
structure, ~17% of response positions have entropy > 0.672 nats from the wording alone (the issue's
target is 15-30%; the model's own uncertainty at digits adds to it).  The longest response (places,
115+910, every longest option) is 94 characters + EOS, inside the toy presets' 96 new tokens.

The prompt carries no route tag, label or answer; the training mixture (``ROUTE_MIX``) decides how often
each route is written, and how well each route is learned decides its accuracy.  ``parse_route`` reads the
route back from any response text (``other`` when no route heading precedes the first digit).
"""

from __future__ import annotations

import random
import re

from .arithmetic import column_steps

ROUTES = ("carrying", "places", "rounding")
ROUTE_MIX = (0.5, 0.25, 0.25)  # training frequency of each route
OPENINGS = ["", "Try ", "Plan ", "Use "]  # drawn once per response, before the route heading
FIRST_WORDS = ["", "go ", "ok "]  # before the first step
STEP_SIGNS = ["=", "->", ": "]  # drawn afresh for every step
SEPARATORS = [", ", "; ", " | ", "\n"]  # drawn afresh between every two steps ...
STEP_WORDS = ["", "so ", "now ", "next "]  # ... followed by a word
CLOSINGS = [". So ", " -> ", ". Ans: ", "\nThus ", ", so "]
ROUTE_RE = re.compile(r"\b(" + "|".join(ROUTES) + r"):")  # a route word used as a heading


def route_steps(route: str, a: int, b: int) -> list[tuple[str, str]]:
    """(left side, result) of each written step of a route; the last result is a + b."""
    if route == "carrying":
        return [(f"{x}+{y}+{c}", str(s)) for x, y, c, s in column_steps(a, b)]
    if route == "places":  # running total, highest place first
        total, steps = 0, []
        for k in range(max(len(str(a)), len(str(b))) - 1, -1, -1):
            x, y = a // 10**k % 10 * 10**k, b // 10**k % 10 * 10**k
            steps.append((f"{total}+{x}+{y}" if steps else f"{x}+{y}", str(total + x + y)))
            total += x + y
        return steps
    if route == "rounding":
        up = -(-b // 10) * 10
        return [(str(b), f"{up}-{up - b}"), (f"{a}+{up}", str(a + up)), (f"{a + up}-{up - b}", str(a + b))]
    raise ValueError(f"unknown route {route!r}")


def fork_response(a: int, b: int, rng: random.Random, route: str | None = None) -> str:
    """A correct response: a drawn opening, a route (drawn from ROUTE_MIX unless given), a first word, its
    steps each with a drawn sign, a drawn separator and word between two steps, and a drawn closing before
    ``\\boxed{a+b}``."""
    opening = rng.choice(OPENINGS)
    route = route or rng.choices(ROUTES, weights=ROUTE_MIX)[0]
    steps = [f"{lhs}{rng.choice(STEP_SIGNS)}{rhs}" for lhs, rhs in route_steps(route, a, b)]
    body = steps[0] + "".join(rng.choice(SEPARATORS) + rng.choice(STEP_WORDS) + s for s in steps[1:])
    return f"{opening}{route}: {rng.choice(FIRST_WORDS)}{body}{rng.choice(CLOSINGS)}\\boxed{{{a + b}}}"


def parse_route(text) -> str:
    """The route a response takes: the first route heading (route word + ":") before the first digit;
    ``other`` otherwise (including empty or non-string input)."""
    if not isinstance(text, str):
        return "other"
    head = re.split(r"[0-9]", text, maxsplit=1)[0]
    m = ROUTE_RE.search(head)
    return m.group(1) if m else "other"
