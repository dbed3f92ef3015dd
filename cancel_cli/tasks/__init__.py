"""Tasks: the toy arithmetic generator, math data loaders, prompt templates and the reward."""

from dataclasses import dataclass, field

TOYS = ("toy", "toy-plain")  # the embedded toy models: toy prompts, toy validation sets, 96-token responses


@dataclass
class Problem:
    """One prompt with its gold answer (a string, as in the benchmark JSONL schema)."""

    id: str
    problem: str
    answer: str
    source: str = ""
    meta: dict = field(default_factory=dict)
