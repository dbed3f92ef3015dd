"""``cancel mc-value`` (Sec. 3, App. E.2, Eq. 20; Fig. 5a, Fig. 11): counterfactual token values.

After one GRPO update on a stored batch, equal numbers of boosted and suppressed tokens are sampled from
positive and negative rollouts (four cells).  For each token a_t at state s_t: M continuations from
s_t + a_t (mean reward avg[0]) and M from s_t (mean reward avg[-1]), with the rollout's sampling
settings and the remaining length budget, rewarded by math-verify:

    Delta_hat(a_t | s_t) = (avg[0] - avg[-1]) / (1 - p(a_t))                              (Eq. 20)
    se = sqrt(avg0 (1 - avg0) / (M - 1) + avgs (1 - avgs) / (M - 1)) / (1 - p)

p is the probability of a_t under the sampling distribution (temperature, top-p).  Tokens with
p > 1 - 1e-3 are skipped (and counted): 1 - p would blow up the estimator's variance.  When a_t is EOS,
s_t + a_t is a finished response and avg[0] is its own reward.  Continuations use the shared-prefix
sampler; values go through the store-wide cache; the job writes one part per chunk of tokens and
``--resume`` continues after a kill (continuation RNGs are seeded per chunk, chunks are fixed by the
seed, so a resumed run equals an uninterrupted one).  ``--repeat K`` (Fig. 11): K repeated updates on
the same batch; values are computed once and only the classes change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import check_positive
from ..console import print_table, progress
from ..errors import UserError
from ..grpo.update import OptimConfig, Updater, old_logprobs
from ..sampling import filter_probs, make_sampler
from ..tasks.reward import score_batch
from ..rollout import RolloutConfig, experiment_run, setup
from .common import batch_for
from ..grpo.probe import classify
from .value_cache import ValueCache, value_key

SKIP_P = 1 - 1e-3
CELLS = [("boosted", "pos"), ("suppressed", "pos"), ("boosted", "neg"), ("suppressed", "neg")]


@dataclass
class ValueConfig(RolloutConfig):
    prompts: int = 16
    M: int = 256
    per_cell: int = 16
    repeat: int = 1
    lr: float = 0.1
    optimizer: str = "sgd"
    chunk: int = 4  # tokens per checkpointed part
    from_batch: str = ""


def sampling_prob(policy, batch, rows, positions, temperature, top_p) -> torch.Tensor:
    """p(a_t) under the sampling distribution (softmax(z / T) restricted to the top-p nucleus)."""
    out = torch.empty(len(rows))
    with torch.no_grad():
        for i, (r, t) in enumerate(zip(rows, positions)):
            h = policy.hidden_states(batch.prompt_ids[r : r + 1], batch.prompt_mask[r : r + 1],
                                     batch.response_ids[r : r + 1], batch.response_mask[r : r + 1])[0, t]
            probs = filter_probs(policy.lm_head(h)[None], temperature, top_p)[0]
            out[i] = probs[batch.response_ids[r, t]]
    return out


def estimate(avg_a: float, avg_s: float, p: float, M: int) -> tuple[float, float]:
    """Eq. 20 and its standard error."""
    var = avg_a * (1 - avg_a) / max(M - 1, 1) + avg_s * (1 - avg_s) / max(M - 1, 1)
    return (avg_a - avg_s) / (1 - p), var**0.5 / (1 - p)


def token_values(policy, batch, tokens: pd.DataFrame, cfg, store, run=None, table: str = "values", sampler=None,
                 desc: str = "mc-value") -> pd.DataFrame:
    """Values for the (rollout, position) rows of ``tokens`` (columns rollout, position, p), through the
    cache; with ``run``, written as resumable parts of ``table``."""
    cache = ValueCache(store)
    sampler = sampler or make_sampler(policy, cfg.engine)
    params = cfg.sampling
    chunks = [tokens.iloc[s : s + cfg.chunk] for s in range(0, len(tokens), cfg.chunk)]
    done = run.done_parts(table) if run is not None else set()
    out = [run.read_table_part(table, i) for i in sorted(done)] if run is not None else []
    with progress(desc, len(chunks)) as advance:
        advance(len(done))
        for ci, ch in enumerate(chunks):
            if ci in done:
                continue
            out.append(_value_chunk(policy, batch, ch, cfg, params, cache, sampler, ci))
            if run is not None:
                run.write_part(table, ci, out[-1])
            advance()
    df = pd.concat(out, ignore_index=True) if out else tokens.iloc[:0].assign(value=[], se=[])
    df.attrs["cache_hit_rate"] = cache.hit_rate
    return df


def _value_chunk(policy, batch, ch, cfg, params, cache, sampler, ci) -> pd.DataFrame:
    resp = [batch.response_ids[r][batch.response_mask[r].bool()].tolist() for r in ch.rollout]
    prompt = [batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist() for r in ch.rollout]
    rows, todo = [], []
    for i, (r, t, p) in enumerate(zip(ch.rollout, ch.position, ch.p)):
        prefix = prompt[i] + resp[i][:t]
        key = value_key(policy.weights_hash, prefix, resp[i][t], cfg.M, params.temperature, params.top_p,
                        params.max_new_tokens, cfg.seed)
        hit = cache.get(key)
        rows.append({"key": key, "hit": hit})
        if hit is None:
            todo.append(i)
    if todo:
        seed = int(hashlib.sha1("".join(rows[i]["key"] for i in todo).encode()).hexdigest()[:12], 16)
        gen = torch.Generator().manual_seed(seed)
        prefixes, budgets, meta = [], [], []
        for i in todo:
            t = int(ch.position.iloc[i])
            base = prompt[i] + resp[i][:t]
            a = resp[i][t]
            meta.append((i, "s", resp[i][:t]))
            prefixes.append(base)
            budgets.append(params.max_new_tokens - t)
            if a != policy.eos_id and params.max_new_tokens - t - 1 >= 1:
                meta.append((i, "a", resp[i][: t + 1]))
                prefixes.append(base + [a])
                budgets.append(params.max_new_tokens - t - 1)
        conts = sampler.continue_prefixes(prefixes, cfg.M, params, gen, budgets=budgets)
        texts, owners = [], []
        for (i, kind, head), grp in zip(meta, conts):
            for c in grp:
                texts.append(policy.decode(head + c))
                owners.append((i, kind))
        rewards = score_batch(texts, [batch.answers[int(ch.rollout.iloc[i])] for i, _ in owners])
        acc: dict = {}
        for (i, kind), rw in zip(owners, rewards):
            acc.setdefault((i, kind), []).append(rw)
        new_entries = []
        for i in todo:
            avg_s = float(np.mean(acc[(i, "s")]))
            if (i, "a") in acc:
                avg_a = float(np.mean(acc[(i, "a")]))
            else:  # a_t ends the response (or the budget): Q is the reward of the response itself
                head = resp[i][: int(ch.position.iloc[i]) + 1]
                avg_a = score_batch([policy.decode(head)], [batch.answers[int(ch.rollout.iloc[i])]])[0]
            entry = {"key": rows[i]["key"], "avg_a": avg_a, "avg_s": avg_s, "M": cfg.M}
            rows[i]["hit"] = entry
            new_entries.append(entry)
        cache.put(new_entries)
    out = ch.copy()
    out["avg_a"] = [r["hit"]["avg_a"] for r in rows]
    out["avg_s"] = [r["hit"]["avg_s"] for r in rows]
    est = [estimate(a, s, p, cfg.M) for a, s, p in zip(out.avg_a, out.avg_s, out.p)]
    out["value"] = [e[0] for e in est]
    out["se"] = [e[1] for e in est]
    out["cached"] = [r["hit"] is not None and i not in todo for i, r in enumerate(rows)]
    return out


def select_candidates(tok: pd.DataFrame, per_cell: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Equal numbers of boosted / suppressed tokens from positive / negative rollouts; p > 1-1e-3 skipped."""
    ok = tok[(tok.p <= SKIP_P) & (tok.advantage != 0)]
    counts = {"skipped_confident": int((tok.p > SKIP_P).sum()), "tokens": len(tok)}
    cells = {(c, o): ok[(ok["class"] == c) & ((ok.advantage > 0) == (o == "pos"))] for c, o in CELLS}
    k = min([per_cell] + [len(v) for v in cells.values()])
    counts.update({f"available_{c}_{o}": len(v) for (c, o), v in cells.items()})
    if k == 0:
        raise UserError("some (boosted|suppressed) x (positive|negative) cell has no eligible token; use more prompts")
    rng = np.random.default_rng(seed)
    picked = pd.concat([v.iloc[np.sort(rng.choice(len(v), k, replace=False))].assign(origin=o) for (c, o), v in cells.items()])
    counts["per_cell"] = k
    return picked.sort_values(["rollout", "position"]).reset_index(drop=True), counts


def gap_stats(df: pd.DataFrame, cls_col: str = "class") -> dict:
    """Mean value per class and origin, and the gaps (boosted - suppressed) with normal 95% CIs."""
    out = {}
    for origin in ("pos", "neg", "all"):
        d = df if origin == "all" else df[df.origin == origin]
        b, s = d[d[cls_col] == "boosted"].value, d[d[cls_col] == "suppressed"].value
        if len(b) < 2 or len(s) < 2:
            out.update({f"gap_{origin}": float("nan"), f"gap_{origin}_ci_low": float("nan"), f"gap_{origin}_ci_high": float("nan")})
            continue
        gap = b.mean() - s.mean()
        se = (b.var(ddof=1) / len(b) + s.var(ddof=1) / len(s)) ** 0.5
        out.update({f"value_boosted_{origin}": float(b.mean()), f"value_suppressed_{origin}": float(s.mean()),
                    f"gap_{origin}": float(gap), f"gap_{origin}_ci_low": float(gap - 1.96 * se),
                    f"gap_{origin}_ci_high": float(gap + 1.96 * se)})
    return out


def per_token_frame(policy, batch, old_lp, new_lp, entropy, cfg) -> pd.DataFrame:
    m = batch.response_mask.bool()
    rows, pos = m.nonzero(as_tuple=True)
    delta = (new_lp - old_lp)[m].double().numpy()
    df = pd.DataFrame({"rollout": rows.numpy(), "position": pos.numpy(), "token_id": batch.response_ids[m].numpy(),
                       "advantage": batch.advantage[rows].numpy(), "reward": batch.reward[rows].numpy(),
                       "entropy": entropy[m].numpy(), "delta": delta, "class": classify(delta)})
    if cfg.top_p >= 1.0:
        df["p"] = old_lp[m].exp().numpy() if cfg.temperature == 1.0 else np.nan
    if cfg.top_p < 1.0 or cfg.temperature != 1.0:
        df["p"] = sampling_prob(policy, batch, df.rollout.tolist(), df.position.tolist(), cfg.temperature, cfg.top_p).numpy()
    return df


def run(cfg: ValueConfig, store, resume: str | None = None):
    check_positive(M=cfg.M, per_cell=cfg.per_cell, repeat=cfg.repeat, chunk=cfg.chunk)
    policy = setup(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    with experiment_run(store, "mc-value", cfg, policy, resume=resume) as run:
        if resume:
            cfg = ValueConfig(**run.config)
        if run.has_table("batch"):
            from ..rollout import RolloutBatch

            batch = RolloutBatch.from_frame(run.read_table("batch"), policy.pad_id)
        else:
            batch = batch_for(cfg, policy, store, gen)
            run.write_table("batch", batch.to_frame())
        st = policy.token_stats(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                temperature=cfg.temperature)
        work = policy.clone()
        upd = Updater(work, OptimConfig(cfg.optimizer, cfg.lr, temperature=cfg.temperature))
        deltas = []
        for _ in range(cfg.repeat):  # Fig. 11: repeated updates on the fixed batch (old logprobs of each step)
            upd.step(batch, [list(range(len(batch)))])
            deltas.append(old_logprobs(work, batch, cfg.temperature))
        tok = per_token_frame(policy, batch, st.logprob, deltas[0], st.entropy, cfg)
        cand, counts = select_candidates(tok, cfg.per_cell, cfg.seed)
        r_idx, t_idx = torch.tensor(cand.rollout.to_numpy()), torch.tensor(cand.position.to_numpy())
        for k, lp in enumerate(deltas, start=1):  # classes after k updates (cumulative delta from theta_0)
            cand[f"class_after_{k}"] = classify((lp - st.logprob)[r_idx, t_idx].double().numpy())
        vals = token_values(policy, batch, cand, cfg, store, run)
        run.write_table("tokens", tok)
        run.write_table("values_final", vals)
        summary = {**counts, **gap_stats(vals), "M": cfg.M, "cache_hit_rate": vals.attrs.get("cache_hit_rate", 0.0),
                   "mean_se": float(vals.se.mean())}
        if cfg.repeat > 1:
            rep = [{"updates": k, **gap_stats(vals, f"class_after_{k}")} for k in range(1, cfg.repeat + 1)]
            run.write_table("repeat", pd.DataFrame(rep))
            summary["gap_all_after_last_update"] = rep[-1]["gap_all"]
        print_table("token value by class and origin (Eq. 20)", [
            {"origin": o, "boosted": summary.get(f"value_boosted_{o}", float("nan")),
             "suppressed": summary.get(f"value_suppressed_{o}", float("nan")), "gap": summary[f"gap_{o}"],
             "95% CI": f"[{summary[f'gap_{o}_ci_low']:.3f}, {summary[f'gap_{o}_ci_high']:.3f}]"} for o in ("pos", "neg", "all")])
        run.finish(summary)
    return run, summary
