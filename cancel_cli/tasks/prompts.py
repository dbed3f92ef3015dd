"""Prompt templates.

- ``qwen-boxed``: the Qwen2.5-Math / SimpleRL-Zoo prompt used for RLVR from Qwen base models
  (ChatML markers, a system line asking for step-by-step reasoning and a ``\\boxed{}`` answer).
- ``plain``: the problem followed by the same instruction, no chat markers.
- ``toy``: the toy's own prompt (the problem text is already ``Add A+B.\\n``).
"""

from __future__ import annotations

from ..errors import UserError

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = {
    "qwen-boxed": "<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n"
                  "<|im_start|>assistant\n",
    "plain": "{problem}\n" + INSTRUCTION.replace("{}", "{{}}") + "\n",
    "toy": "{problem}",
}


def render(problem: str, template: str) -> str:
    if template not in TEMPLATES:
        raise UserError(f"unknown prompt template {template!r} ({' | '.join(TEMPLATES)})")
    t = TEMPLATES[template]
    if template == "qwen-boxed":
        return t.replace("{problem}", problem)
    return t.format(problem=problem)


def default_template(model: str) -> str:
    from . import TOYS

    return "toy" if model in TOYS else "qwen-boxed"
