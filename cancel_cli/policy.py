"""Policy = HF causal LM + tokenizer: per-token logprob, entropy (nats) and final hidden state.

Batches use verl's layout: prompts left-padded to a common width P, responses right-padded to L, so
response token t of every row sits at column P + t and is predicted by the logits at column P + t - 1.
Position ids are computed from the attention mask, so left padding never shifts positions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass
class TokenStats:
    logprob: torch.Tensor  # [B, L] log pi(o_t | s_t) at the given temperature (0 on padding)
    entropy: torch.Tensor | None  # [B, L] entropy of pi(. | s_t) in nats
    hidden: torch.Tensor | None  # [B, L, H] input of the LM head at s_t


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s[:width])
        mask[i, : len(s)] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


class Policy:
    """A causal LM with the quantities every analysis needs.  ``model`` is any HF ``*ForCausalLM``."""

    def __init__(self, model, tokenizer, name: str = "", weights_hash: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.weights_hash = weights_hash

    # -- identity --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return int(pid if pid is not None else self.tokenizer.eos_token_id)

    @property
    def lm_head(self) -> torch.nn.Linear:
        return self.model.get_output_embeddings()

    def backbone(self):
        """The decoder whose last hidden state is the LM head's input (after the final norm)."""
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    def clone(self) -> "Policy":
        """An independent copy (analyses compare several updates from one theta_0)."""
        return Policy(copy.deepcopy(self.model), self.tokenizer, self.name, self.weights_hash)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- per-token quantities --------------------------------------------------------------------
    def hidden_states(self, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
        """[B, L, H] LM-head inputs at the states that predict each response token (differentiable)."""
        ids = torch.cat([prompt_ids, response_ids], 1).to(self.device)
        # A right-padded response's pad columns never influence earlier columns (causal attention).
        mask_full = torch.cat([prompt_mask, torch.ones_like(response_mask)], 1).to(self.device)
        out = self.backbone()(input_ids=ids, attention_mask=mask_full, position_ids=positions(mask_full),
                              use_cache=False)
        P, L = prompt_ids.shape[1], response_ids.shape[1]
        return out.last_hidden_state[:, P - 1 : P + L - 1]

    def token_stats(self, prompt_ids, prompt_mask, response_ids, response_mask, *, temperature: float = 1.0,
                    with_entropy: bool = True, with_hidden: bool = False, grad: bool = False,
                    max_rows: int = 64) -> TokenStats:
        """Per-token logprob / entropy / hidden for a batch, in chunks of ``max_rows`` rows (fp32 math)."""
        lps, ents, hs = [], [], []
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            for s in range(0, prompt_ids.shape[0], max_rows):
                sl = slice(s, s + max_rows)
                h = self.hidden_states(prompt_ids[sl], prompt_mask[sl], response_ids[sl], response_mask[sl])
                lp, ent = logprob_entropy(self.lm_head(h), response_ids[sl].to(h.device), temperature, with_entropy)
                m = response_mask[sl].to(lp.device)
                lps.append(lp * m)
                ents.append(ent * m if ent is not None else None)
                hs.append(h if with_hidden else None)
        return TokenStats(torch.cat(lps), torch.cat(ents) if with_entropy else None,
                          torch.cat(hs) if with_hidden else None)


def logprob_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                    with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / T)[target] and the entropy of softmax(logits / T), in fp32 (fp64 stays fp64)."""
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)
    return lp, ent
