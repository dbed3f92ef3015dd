"""The embedded ``toy`` model, the suite's default: toy-plain's architecture and build recipe
(``toy_model.train_until``) trained on the fork task (``tasks/fork.py``: three solution routes chosen at a
decision token early in the response), shipped in ``assets/toy`` and built by ``cancel toy build`` (kind fork).

Stopping rule: the first evaluation (every 50 steps; every 5 once accuracy reached 0.22) whose T=1
exact-match accuracy on 512 held-out prompts lies in ``target`` = [0.445, 0.555], i.e. the issue's window
[0.40, 0.60] narrowed by ~2 standard errors of a 512-sample estimate so that a re-measurement with another
sampler stays inside [0.40, 0.60].  Nothing
else about the profile is selected for: the entropy, route and group numbers are measured after the stop
(``fork_profile``) and recorded in ``build.json`` and the model card as they come out.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from .tasks.arithmetic import toy_problems
from .tasks.fork import ROUTE_MIX, ROUTES, fork_response, parse_route
from .toy_model import save_pretrained, train_until

TARGET = (0.445, 0.555)
ENTROPY_FORK = 0.672  # nats: the high-entropy threshold of Wang et al. 2025 (the reference)
P_CERTAIN = 0.99
# The targets; fork_profile's numbers are checked against them (card + tests), never trained on.
TARGETS = {"accuracy": (0.40, 0.60), "share_entropy_gt_0.672": (0.15, 0.30), "share_p_gt_0.99": (0.40, 1.0),
           "routes_ge_15pct": (2, 3), "route_accuracy_gap": (0.2, 1.0), "mixed_groups_n8": (0.70, 1.0)}


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def build_fork(out_dir: Path, seed: int = 0, target: tuple[float, float] = TARGET, max_steps: int = 3000,
               eval_every: int = 50, fine_every: int = 5, batch: int = 64, stop_at: int | None = None,
               log=print) -> dict:
    """Train the toy (fork kind) from scratch and save an HF folder with ``build.json`` and a model card.

    ``stop_at`` truncates the build at that step (same code path, no stopping rule, no profile): the
    determinism test rebuilds such a prefix and compares it with the hash recorded in build.json.  Torch runs
    on BUILD_THREADS threads during the build (float reductions depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        return _build(Path(out_dir), seed, target, max_steps, eval_every, fine_every, batch, stop_at, log)
    finally:
        torch.set_num_threads(threads)


def _build(out_dir, seed, target, max_steps, eval_every, fine_every, batch, stop_at, log) -> dict:
    t0 = time.time()
    policy, facts = train_until(seed, fork_response, target, max_steps, eval_every, batch, log, "toy",
                                stop_at=stop_at, fine_every=fine_every)
    facts["torch_threads"] = BUILD_THREADS
    save_pretrained(policy.model, policy.tokenizer, out_dir)
    facts["weights_sha256"] = file_hash(out_dir / "model.safetensors")
    if stop_at is not None:
        facts["truncated"] = True
        (out_dir / "build.json").write_text(json.dumps(facts, indent=2))
        return facts
    t1 = time.time()
    facts["profile"] = fork_profile(policy, seed=2000 + seed)
    facts["profile_seconds"] = round(time.time() - t1, 1)
    facts["build_seconds"] = round(time.time() - t0, 1)
    facts["truncated_build"] = _truncated_record(seed, batch)
    (out_dir / "build.json").write_text(json.dumps(facts, indent=2))
    (out_dir / "README.md").write_text(model_card(facts, len(policy.tokenizer)))
    return facts


TRUNCATED_STEPS = 10
BUILD_THREADS = 1  # one thread: deterministic on any machine, and 3x faster than two on shared cores


def _truncated_record(seed: int, batch: int) -> dict:
    """Step and weights hash of the build truncated at TRUNCATED_STEPS (what the determinism test rebuilds)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = build_fork(Path(d), seed, batch=batch, stop_at=TRUNCATED_STEPS, log=lambda *_: None)
    return {"steps": f["steps"], "weights_sha256": f["weights_sha256"]}


def fork_profile(policy, n: int = 512, groups: int = 128, group_size: int = 8, seed: int = 0,
                 max_new_tokens: int = 96) -> dict:
    """The toy's profile at T=1 (top-p 1): on ``n`` held-out prompts x 1 rollout, exact-match accuracy, the
    share of response tokens with entropy > 0.672 nats and with sampled-token probability > 0.99, each
    route's share and accuracy; on ``groups`` other held-out prompts x ``group_size``, the share of mixed
    GRPO groups (some but not all rollouts rewarded)."""
    from .rollout import build_batch
    from .sampling import SamplingParams, TorchSampler
    from .tasks.reward import score_batch

    params = SamplingParams(1.0, 1.0, max_new_tokens)
    probs = toy_problems(n, seed, split="heldout")
    prompts = [policy.encode(p.problem) for p in probs]
    outs = TorchSampler(policy).rollouts(prompts, 1, params, torch.Generator().manual_seed(seed))
    responses = [o[0] for o in outs]
    texts = [policy.decode(r) for r in responses]
    rewards = score_batch(texts, [p.answer for p in probs])
    batch = build_batch(policy, prompts, responses)
    st = policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    m = batch.response_mask.bool()
    digit_ids = torch.tensor(policy.tokenizer.convert_tokens_to_ids(list("0123456789")))
    prof = {"prompts": n, "tokens": int(m.sum()), "accuracy": sum(rewards) / n,
            **token_shares(st.entropy[m], st.logprob[m].exp(), torch.isin(batch.response_ids[m], digit_ids))}
    prof.update(route_table(texts, rewards))
    gprobs = toy_problems(groups, seed + 1, split="heldout")
    gouts = TorchSampler(policy).rollouts([policy.encode(p.problem) for p in gprobs], group_size, params,
                                          torch.Generator().manual_seed(seed + 1))
    gtexts = [policy.decode(r) for o in gouts for r in o]
    grew = score_batch(gtexts, [p.answer for p in gprobs for _ in range(group_size)])
    prof["mixed_groups_n8"] = mixed_share(grew, group_size)
    prof["groups"] = groups
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in prof.items()}


def token_shares(entropy: torch.Tensor, p_sampled: torch.Tensor, is_digit: torch.Tensor | None = None) -> dict:
    """Share of tokens with entropy > 0.672 nats, with sampled-token probability > 0.99, and the median p.
    With ``is_digit``, the high-entropy share is also split into digits (the model's uncertainty about a
    computed number) and everything else (route letters and wording): the two parts add up to the share."""
    high = entropy > ENTROPY_FORK
    out = {"share_entropy_gt_0.672": float(high.float().mean()),
           "share_p_gt_0.99": float((p_sampled > P_CERTAIN).float().mean()),
           "median_p": float(p_sampled.median()), "mean_entropy": float(entropy.mean())}
    if is_digit is not None:
        out["high_entropy_at_digits"] = float((high & is_digit).float().mean())
        out["high_entropy_elsewhere"] = float((high & ~is_digit).float().mean())
    return out


def route_table(texts: list[str], rewards: list[float]) -> dict:
    """Per route (and ``other``): share of rollouts and accuracy; the number of routes chosen in >= 15% of
    rollouts and the largest accuracy gap between two such routes."""
    out, common = {}, []
    for r in ROUTES + ("other",):
        idx = [i for i, t in enumerate(texts) if parse_route(t) == r]
        share = len(idx) / len(texts)
        acc = sum(rewards[i] for i in idx) / len(idx) if idx else float("nan")
        out[f"route_{r}"] = {"share": round(share, 4), "accuracy": round(acc, 4) if idx else None}
        if r != "other" and share >= 0.15:
            common.append(acc)
    out["routes_ge_15pct"] = len(common)
    out["route_accuracy_gap"] = round(max(common) - min(common), 4) if len(common) >= 2 else 0.0
    return out


def mixed_share(rewards: list[float], group_size: int) -> float:
    """Share of consecutive groups of ``group_size`` rewards that are neither all 0 nor all 1."""
    sums = [sum(rewards[i : i + group_size]) for i in range(0, len(rewards), group_size)]
    return sum(0 < s < group_size for s in sums) / len(sums)


def check_targets(prof: dict) -> dict[str, bool]:
    """Which of the issue's targets a profile meets."""
    return {k: TARGETS[k][0] <= prof[k] <= TARGETS[k][1] for k in TARGETS}


def model_card(facts: dict, vocab: int) -> str:
    p, ok = facts["profile"], check_targets(facts["profile"])
    mix = ", ".join(f"{r} {w:.2f}" for r, w in zip(ROUTES, ROUTE_MIX))
    routes = "\n".join(f"| {r} | {p[f'route_{r}']['share']:.3f} | "
                       f"{'-' if p[f'route_{r}']['accuracy'] is None else format(p[f'route_{r}']['accuracy'], '.3f')} |"
                       for r in ROUTES + ("other",))
    rows = "\n".join(f"| {k} | {TARGETS[k][0]}-{TARGETS[k][1]} | {p[k]} | {'yes' if ok[k] else 'NO'} |" for k in TARGETS)
    return f"""# cancel toy model

The suite's default model: a {facts['params']:,}-parameter Qwen3ForCausalLM (toy-plain's architecture: hidden 128, 2 layers, 4 heads /
2 KV heads, MLP 512, untied LM head, character tokenizer of {vocab} tokens), trained from scratch by
`cancel toy build --seed {facts['seed']}` (kind fork) on toy-plain's prompts (`Add A+B.\\n`, 2-3 digit
operands) answered by one of three solution routes chosen at a decision token early in the response
(the first letter of the route heading; see `cancel_cli/tasks/fork.py`): `carrying:` (right-to-left
columns with carries, every step written), `places:` (left-to-right running total of place values) and
`rounding:` (round B up to a ten, add, compensate).  Training mixture: {mix}; wording (opening, first
word, the sign of every step, a separator and a word between every two steps, closing) is drawn at
random, independently of route and correctness.
Recipe: toy-plain's (AdamW lr 3e-3, 100 warm-up steps, wd 0.01, betas (0.9, 0.98), clip 1.0, batch 64,
loss on the response only).

- Stopped at step {facts['steps']}, the first evaluation (every 50 steps; every 5 once accuracy reached
  half the window's lower edge) whose T=1 accuracy on 512 held-out prompts was in
  [{TARGET[0]}, {TARGET[1]}]: **{facts['accuracy_t1_512']:.3f}**.  Wall time: {facts['train_seconds']} s of
  training, {facts['build_seconds']} s with the profile, on {facts['torch_threads']}
  torch thread(s) of a 2-core machine (see `benchmarks/toy_models.py`).
- Weights sha256 (first 16 hex): `{facts['weights_sha256']}`; the build truncated at step
  {facts['truncated_build']['steps']}: `{facts['truncated_build']['weights_sha256']}`.

## Profile at T=1 ({p['prompts']} held-out prompts x 1, {p['tokens']} response tokens; {p['groups']} groups of 8)

| target | window | measured | met |
|---|---|---|---|
{rows}

Median sampled-token probability {p['median_p']:.4f}; mean entropy {p['mean_entropy']:.3f} nats.  Tokens with
entropy > 0.672 nats: {p['high_entropy_at_digits']:.3f} of all response tokens are digits (the model unsure of
a number it computes), {p['high_entropy_elsewhere']:.3f} are route letters and wording.

| route | share of rollouts | accuracy |
|---|---|---|
{routes}

Prompt template: `Add A+B.\\n` (the same prompts as `toy-plain`, so `--data toy` serves both); the response
ends in `\\boxed{{A+B}}` and EOS (`<|endoftext|>`), at most 95 tokens.
"""
