"""verl custom reward function: math-verify, binary (``reward.custom_reward_function``)."""

from __future__ import annotations


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    from cancel_cli.tasks.reward import score

    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("ground_truth", ""))
    s = score(solution_str, str(ground_truth))
    return {"score": s, "acc": s}
