"""toy-plain (column addition only, ``toy_model.py``) and what both embedded toys share: architecture and
tokenizer.  The default toy (fork kind) has its own tests in test_toy_fork.py."""

import json

import pytest
import torch

from cancel_cli.config import PLAIN_DIR
from cancel_cli.toy_model import entropy_profile, toy_accuracy


@pytest.fixture(scope="module")
def plain():
    from cancel_cli.config import load_policy

    return load_policy("toy-plain")


@pytest.mark.parametrize("name", ["toy", "toy-plain"])
def test_toy_architecture(name):
    from cancel_cli.config import load_policy

    toy = load_policy(name)
    cfg = toy.model.config
    assert cfg.model_type == "qwen3" and cfg.hidden_size == 128 and cfg.num_hidden_layers == 2
    assert cfg.num_attention_heads == 4 and not cfg.tie_word_embeddings
    n = sum(p.numel() for p in toy.model.parameters())
    assert 400_000 <= n <= 1_000_000
    assert toy.lm_head.weight.data_ptr() != toy.model.get_input_embeddings().weight.data_ptr()


def test_tokenizer_roundtrip(toy):
    text = "Add 347+285.\nAdd by columns: 7+5+0=12; 4+8+1=13 -> \\boxed{632}"
    ids = toy.encode(text)
    assert len(ids) == len(text)
    assert toy.decode(ids) == text
    assert toy.decode(ids + [toy.eos_id]) == text


def test_toy_plain_accuracy_in_window(plain):
    acc = toy_accuracy(plain, n=512, seed=12345)
    assert 0.35 <= acc <= 0.65, acc


def test_toy_plain_entropy_profile(plain):
    prof = entropy_profile(plain, n=256, seed=777)
    assert prof["share_gt_0.1_all"] >= 0.15, prof
    assert prof["share_gt_0.1_scaffold"] >= 0.10, prof


def test_card_and_build_record_exist():
    facts = json.loads((PLAIN_DIR / "build.json").read_text())
    assert 0.35 <= facts["accuracy_t1_512"] <= 0.6
    card = (PLAIN_DIR / "README.md").read_text()
    assert "# cancel toy-plain model" in card and "cancel toy build --kind plain --seed 0" in card and "Entropy profile" in card


def test_toy_plain_build_is_deterministic_and_the_shipped_card_is_in_its_window():
    """The build is deterministic for a seed: the same code path (`train_until`, what `cancel toy build --kind plain` runs),
    truncated after 12 steps, gives bit-identical weights twice, and a different seed gives other weights.
    A full rebuild equals the shipped checkpoint only on the same kind of CPU: float reductions differ across
    CPU types (measured on this project's machines: the shipped build stopped at step 340, a rebuild of the
    very same code on another machine at step 320), so that check is `cancel toy build --kind plain` on the user's side."""
    from cancel_cli.tasks.arithmetic import toy_response
    from cancel_cli.toy_model import train_until

    def weights(seed):
        policy, facts = train_until(seed, toy_response, (0.40, 0.60), max_steps=12, eval_every=10, batch=16,
                                    log=lambda *a: None, stop_at=12)
        assert facts["steps"] == 12
        return {k: v.clone() for k, v in policy.model.state_dict().items()}

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    shipped = json.loads((PLAIN_DIR / "build.json").read_text())
    assert 0.40 <= shipped["accuracy_t1_512"] <= 0.60 and shipped["steps"] % 10 == 0
