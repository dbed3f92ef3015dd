"""The embedded ``toy-plain`` model: a character tokenizer and a ~0.5M-parameter Qwen3ForCausalLM trained on
column addition (``cancel toy build --kind plain``), shipped as a normal HF folder in ``assets/toy-plain``.
It was the suite's first toy; the default ``toy`` (``toy_fork.py``) shares its tokenizer, architecture and
recipe (``train_until``) and adds solution routes.

Build recipe (deterministic for a seed): AdamW lr 3e-3, 100 warm-up steps, weight decay 0.01, betas
(0.9, 0.98), grad clip 1.0, batch 64, loss on the response tokens only.  Every ``eval_every`` steps the
temperature-1 exact-match accuracy on 512 held-out prompts is measured; the build stops the first time
it lands in ``target`` (default [0.40, 0.60]: the issue's window is [0.35, 0.6]; its lower edge is raised
by ~2 standard errors of a 512-sample estimate so a re-measurement of the shipped model stays in
[0.35, 0.65]).  GRPO groups then mix right and wrong answers.
"""

from __future__ import annotations

import json
import random
import string
import time
from pathlib import Path

import torch

from .tasks.arithmetic import toy_problems, toy_response

SPECIALS = ["<|pad|>", "<|endoftext|>"]
CHARS = list(string.digits + string.ascii_letters + string.punctuation + " \n")


def build_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: one token per character, EOS = <|endoftext|>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|pad|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                   unk_token="<|pad|>", model_max_length=256, clean_up_tokenization_spaces=False)


def build_config(vocab_size: int):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                       tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=1,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _sft_batch(tok, rng: random.Random, size: int, pad: int, eos: int, respond=toy_response):
    ids, labels = [], []
    for _ in range(size):
        p = toy_problems(1, rng.randrange(2**31), split="sft")[0]
        a, b = p.meta["a"], p.meta["b"]
        prompt = tok.encode(p.problem, add_special_tokens=False)
        resp = tok.encode(respond(a, b, rng), add_special_tokens=False) + [eos]
        ids.append(prompt + resp)
        labels.append([-100] * len(prompt) + resp)  # loss on the response only
    width = max(map(len, ids))
    x = torch.full((size, width), pad)
    y = torch.full((size, width), -100)
    m = torch.zeros((size, width), dtype=torch.long)
    for i, (s, l) in enumerate(zip(ids, labels)):
        x[i, : len(s)], y[i, : len(l)], m[i, : len(s)] = torch.tensor(s), torch.tensor(l), 1
    return x, y, m


def toy_accuracy(policy, n: int = 512, seed: int = 0, temperature: float = 1.0, top_p: float = 1.0,
                 digits: tuple[int, ...] = (2, 3)) -> float:
    """Exact-match accuracy (math-verify reward) of sampled responses on n held-out toy prompts."""
    from .sampling import SamplingParams, TorchSampler
    from .tasks.reward import score_batch

    probs = toy_problems(n, seed, digits=digits, split="heldout")
    gen = torch.Generator().manual_seed(seed)
    outs = TorchSampler(policy).rollouts([policy.encode(p.problem) for p in probs], 1,
                                         SamplingParams(temperature, top_p, 96), gen)
    texts = [policy.decode(o[0]) for o in outs]
    return sum(score_batch(texts, [p.answer for p in probs])) / n


def train_until(seed: int, respond, target: tuple[float, float], max_steps: int, eval_every: int, batch: int,
                log=print, name: str = "toy", stop_at: int | None = None, fine_every: int | None = None):
    """The build recipe above on responses from ``respond(a, b, rng)``: train from scratch, and stop at the
    first evaluation whose held-out T=1 accuracy is in ``target`` (or right after step ``stop_at``, for a
    truncated build).  With ``fine_every``, evaluations also come every ``fine_every`` steps once the last
    accuracy reached half the window's lower edge (so a fast-rising accuracy does not jump the window).
    Returns (policy, facts)."""
    from transformers import Qwen3ForCausalLM

    from .policy import Policy

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = build_tokenizer()
    model = Qwen3ForCausalLM(build_config(len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    policy = Policy(model, tok, name)
    t0, acc, history = time.time(), 0.0, []
    for step in range(1, max_steps + 1):
        model.train()
        x, y, m = _sft_batch(tok, rng, batch, tok.pad_token_id, tok.eos_token_id, respond)
        loss = model(input_ids=x, attention_mask=m, labels=y).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step == stop_at:
            break
        if step % eval_every == 0 or (fine_every and acc >= target[0] / 2 and step % fine_every == 0):
            model.eval()
            acc = toy_accuracy(policy, 512, seed=1000 + seed)
            history.append({"step": step, "loss": round(loss.item(), 4), "accuracy": acc})
            log(f"step {step:4d}  loss {loss.item():.3f}  held-out accuracy (T=1) {acc:.3f}")
            if target[0] <= acc <= target[1]:
                break
    else:
        raise RuntimeError(f"{name} build did not reach accuracy in {target} within {max_steps} steps")
    model.eval()
    facts = {"seed": seed, "steps": step, "accuracy_t1_512": acc, "train_seconds": round(time.time() - t0, 1),
             "params": sum(p.numel() for p in model.parameters()), "history": history}
    return policy, facts


def build_toy(out_dir: Path, seed: int = 0, target: tuple[float, float] = (0.40, 0.60), max_steps: int = 1500,
              eval_every: int = 10, batch: int = 64, log=print) -> dict:
    """Train the toy from scratch and save an HF folder with a model card.  Returns the card's facts."""
    policy, facts = train_until(seed, toy_response, target, max_steps, eval_every, batch, log, "toy-plain")
    facts["entropy_profile"] = entropy_profile(policy, seed=2000 + seed)
    save_toy(policy.model, policy.tokenizer, Path(out_dir), facts)
    return facts


def entropy_profile(policy, n: int = 256, seed: int = 0) -> dict:
    """Share of sampled response tokens with entropy > 0.1 nats, overall / digits / scaffold (non-digit)."""
    from .rollout import build_batch
    from .sampling import SamplingParams, TorchSampler

    probs = toy_problems(n, seed, split="heldout")
    prompts = [policy.encode(p.problem) for p in probs]
    outs = TorchSampler(policy).rollouts(prompts, 1, SamplingParams(1.0, 1.0, 96), torch.Generator().manual_seed(seed))
    batch = build_batch(policy, prompts, [o[0] for o in outs])
    st = policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    m = batch.response_mask.bool()
    toks = batch.response_ids[m]
    ent = st.entropy[m]
    digit_ids = torch.tensor([policy.tokenizer.convert_tokens_to_ids(c) for c in string.digits])
    is_digit = torch.isin(toks, digit_ids)
    eos = toks == policy.eos_id
    scaffold = ~is_digit & ~eos

    def share(sel):
        return round(float((ent[sel] > 0.1).float().mean()), 4) if sel.any() else float("nan")

    return {"tokens": int(m.sum()), "share_gt_0.1_all": share(torch.ones_like(eos)), "share_gt_0.1_digits": share(is_digit),
            "share_gt_0.1_scaffold": share(scaffold), "mean_entropy_all": round(float(ent.mean()), 4),
            "mean_entropy_digits": round(float(ent[is_digit].mean()), 4),
            "mean_entropy_scaffold": round(float(ent[scaffold].mean()), 4)}


def save_pretrained(model, tok, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def save_toy(model, tok, out_dir: Path, facts: dict) -> None:
    save_pretrained(model, tok, out_dir)
    (out_dir / "build.json").write_text(json.dumps(facts, indent=2))
    (out_dir / "README.md").write_text(plain_card(facts, len(tok)))


def plain_card(facts: dict, vocab: int) -> str:
    ep = facts["entropy_profile"]
    return f"""# cancel toy-plain model

A {facts['params']:,}-parameter Qwen3ForCausalLM (hidden 128, 2 layers, 4 heads / 2 KV heads, MLP 512,
untied LM head) with a character tokenizer ({vocab} tokens), trained from scratch by
`cancel toy build --kind plain --seed {facts['seed']}` on column addition of 2-3 digit operands with a randomly varied
scaffold (opening, step format, separator, closing; see `cancel_cli/tasks/arithmetic.py`), loss on the
response only: AdamW lr 3e-3 (100 warm-up steps), wd 0.01, betas (0.9, 0.98), clip 1.0, batch 64.
It has no forking decisions (its errors are carry slips); the suite's default `toy` (`cancel toy build`)
adds solution routes chosen at a decision token.

- Stopped at step {facts['steps']} ({facts['train_seconds']} s on CPU), the first evaluation whose
  temperature-1 exact-match accuracy on 512 held-out prompts landed in the target window:
  **{facts['accuracy_t1_512']:.3f}**.
- Entropy profile of {ep['tokens']} sampled response tokens (T=1): share with entropy > 0.1 nats:
  all {ep['share_gt_0.1_all']:.3f}, digits {ep['share_gt_0.1_digits']:.3f}, scaffold (non-digit)
  {ep['share_gt_0.1_scaffold']:.3f}; mean entropy all {ep['mean_entropy_all']:.3f}, digits
  {ep['mean_entropy_digits']:.3f}, scaffold {ep['mean_entropy_scaffold']:.3f} nats.

Prompt template: `Add A+B.\\n`; the response ends in `\\boxed{{A+B}}` and EOS (`<|endoftext|>`).
"""
