"""The default toy (fork kind, ``toy_fork.py`` / ``tasks/fork.py``): route parsing, the decision category,
the shipped model's profile measured with an independent
sampler (plain ``model.generate``), deterministic (truncated) rebuild, and bad input."""

import json
import random
from pathlib import Path

import pytest
import torch

from cancel_cli.config import TOY_DIR
from cancel_cli.tasks.arithmetic import toy_problems
from cancel_cli.tasks.fork import ROUTES, fork_response, parse_route, route_steps
from cancel_cli.toy_fork import TARGETS, check_targets, mixed_share, route_table

built = pytest.mark.skipif(not (TOY_DIR / "config.json").exists(), reason="toy not built")


# -- task and route parser -------------------------------------------------------------------------
@pytest.mark.parametrize("text,route", [
    ("carrying: 7+5+0=12, 4+8+1=13; 3+2+1=6. So \\boxed{632}", "carrying"),
    ("Try places: 300+200->500 then 500+40+80->620 | 620+7+5->632 -> \\boxed{632}", "places"),
    ("Plan: rounding: 285=>290-5, 347+290=>637; 637-5=>632. Answer: \\boxed{632}", "rounding"),
    ("Use carrying: 7+5+0=12 | 4+8+1=13 then 3+2+1=6\nThus \\boxed{633}", "carrying"),  # wrong, still a route
    ("rounding: places: 85=90-5", "rounding"),  # the first heading decides
    ("Try places 300+200=500", "other"),  # no heading
    ("7+5=12, carrying: 1", "other"),  # route word after the first digit: not a decision made early
    ("I like rounding numbers: 12", "other"),
    ("\\boxed{632}", "other"), ("", "other"), ("rounding", "other"), (None, "other"), (632, "other"),
])
def test_parse_route(text, route):
    assert parse_route(text) == route


def test_every_generated_response_is_correct_and_parses_back_to_its_route():
    from cancel_cli.tasks.reward import score_batch

    rng = random.Random(0)
    texts, answers = [], []
    for p in toy_problems(60, 5, split="train"):
        a, b = p.meta["a"], p.meta["b"]
        for route in ROUTES:
            for lhs, rhs in route_steps(route, a, b):  # every written step is true arithmetic
                assert eval(lhs) == eval(rhs), (route, a, b, lhs, rhs)
            t = fork_response(a, b, rng, route)
            assert parse_route(t) == route and len(t) < 96 and str(a) not in t.split(":")[0]
            texts.append(t)
            answers.append(p.answer)
    assert score_batch(texts, answers) == [1.0] * len(texts)
    drawn = [parse_route(fork_response(12, 34, rng)) for _ in range(2000)]
    assert abs(drawn.count("carrying") / 2000 - 0.5) < 0.05 and set(drawn) == set(ROUTES)


class _Longest(random.Random):
    """An rng that always picks the longest option (route given): the longest response a route can take."""

    def choice(self, seq):
        return max(seq, key=len)


def test_the_longest_response_fits_the_toy_presets_96_new_tokens():
    import yaml

    presets = [yaml.safe_load(p.read_text()) for p in (Path(__file__).parent.parent / "experiments").glob("*_toy.yaml")]
    budget = min(p["max_new_tokens"] for p in presets if "max_new_tokens" in p)
    longest = max((len(fork_response(a, b, _Longest(), r)), a, b, r)
                  for a in range(10, 1000, 3) for b in (10, 99, 100, 285, 901, 910, 990, 999) for r in ROUTES)
    assert longest[0] + 1 <= budget == 96, longest  # + EOS
    assert longest[0] == 94  # the docstring of tasks/fork.py states it


def test_wording_is_drawn_at_every_step():
    """Signs, separators and step words vary within one response (drawn per step, not once per response)."""
    from cancel_cli.tasks.fork import SEPARATORS, STEP_SIGNS, STEP_WORDS

    rng = random.Random(1)
    texts = [fork_response(347, 285, rng, "rounding") for _ in range(400)]
    within = 0
    for t in texts:  # rounding steps: 285?290-5, 347+290?637, 637-5?632
        signs = {next(s for s in STEP_SIGNS if t[t.index(lhs) + len(lhs):].startswith(s)) for lhs in ("285", "347+290", "637-5")}
        within += len(signs) > 1
    assert within / len(texts) > 0.6  # 1 - 3 * (1/3)^3 = 0.89 when drawn per step; 0 when drawn once
    pairs = {(s, w) for t in texts for s in SEPARATORS for w in STEP_WORDS if w and f"{s}{w}347+290" in t}
    assert pairs == {(s, w) for s in SEPARATORS for w in STEP_WORDS if w}  # every separator x word before step 2


def test_decision_category_marks_the_route_choice_token_only():
    from cancel_cli.analysis.categories import classify_tokens

    text = "Try rounding: 85=90-5 | 47+90=137, 137-5=132. So \\boxed{132}"
    cats = classify_tokens(list(text))
    assert [i for i, c in enumerate(cats) if c == "decision"] == [text.index("rounding")]
    assert set(cats[text.index("rounding") + 1 : text.index(":")]) == {"format"}
    # sub-word pieces: the piece that starts the heading is the decision; a route word that is no heading is not
    assert classify_tokens(["Plan", ":", " pla", "ces", ":", " 4"]) == ["word", "format", "decision", "format", "format", "number"]
    assert "decision" not in classify_tokens(list("two decimal places, rounding 3.14"))


def test_route_table_and_mixed_share_by_hand():
    texts = ["carrying: 1"] * 4 + ["places: 1"] * 3 + ["rounding: 1", "x"]
    rewards = [1, 1, 1, 0] + [0, 0, 1] + [1, 0]
    t = route_table(texts, rewards)
    assert t["route_carrying"] == {"share": round(4 / 9, 4), "accuracy": 0.75}
    assert t["route_places"]["accuracy"] == round(1 / 3, 4) and t["route_other"]["share"] == round(1 / 9, 4)
    assert t["routes_ge_15pct"] == 2 and t["route_accuracy_gap"] == round(0.75 - 1 / 3, 4)  # rounding: 11% < 15%
    assert mixed_share([1, 0, 0, 0, 1, 1, 0, 1], 2) == 0.5  # groups 10 | 00 | 11 | 01


def test_token_shares_split_high_entropy_into_digits_and_the_rest_by_hand():
    from cancel_cli.toy_fork import token_shares

    ent = torch.tensor([0.1, 0.7, 1.0, 0.9, 0.0])
    p = torch.tensor([0.999, 0.5, 0.3, 0.4, 0.995])
    digit = torch.tensor([True, True, False, False, True])
    t = token_shares(ent, p, digit)
    assert t["share_entropy_gt_0.672"] == pytest.approx(0.6) and t["share_p_gt_0.99"] == pytest.approx(0.4)
    assert t["high_entropy_at_digits"] == pytest.approx(0.2) and t["high_entropy_elsewhere"] == pytest.approx(0.4)
    assert "high_entropy_at_digits" not in token_shares(ent, p)


# -- the shipped model -----------------------------------------------------------------------------
@built
def test_shipped_profile_with_plain_generate_meets_every_target():
    """An independent sampler path: HF ``generate(do_sample=True, top_k=0)`` with its own logits, on prompts
    the build never measured (held-out seed 4242), rewarded by math-verify.  Every target of the issue must
    be met here, and the card (build.json) must record every one as met."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cancel_cli.tasks.reward import score_batch

    tok = AutoTokenizer.from_pretrained(TOY_DIR)
    model = AutoModelForCausalLM.from_pretrained(TOY_DIR).eval()
    torch.manual_seed(4242)

    def sample(probs, n):
        prompts = [tok.encode(p.problem, add_special_tokens=False) for p in probs]
        w = max(map(len, prompts))
        ids = torch.tensor([[0] * (w - len(p)) + p for p in prompts])
        mask = (torch.arange(w) >= torch.tensor([w - len(p) for p in prompts])[:, None]).long()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                                 temperature=1.0, max_new_tokens=96, num_return_sequences=n, pad_token_id=0,
                                 eos_token_id=1, return_dict_in_generate=True, output_logits=True)
        resp = out.sequences[:, w:]
        alive = torch.cumprod(torch.cat([torch.ones_like(resp[:, :1]), (resp[:, :-1] != 1).long()], 1), 1).bool()
        logp = torch.log_softmax(torch.stack(out.logits, 1).float(), -1)
        ent = -(logp.exp() * logp).sum(-1)[alive]
        p_tok = logp.gather(-1, resp.unsqueeze(-1)).squeeze(-1).exp()[alive]
        texts = tok.batch_decode(resp, skip_special_tokens=True)
        rewards = score_batch(texts, [p.answer for p in probs for _ in range(n)])
        return texts, rewards, ent, p_tok

    probs = toy_problems(512, 4242, split="heldout")
    texts, rewards, ent, p_tok = sample(probs, 1)
    prof = {"accuracy": sum(rewards) / len(rewards), "share_entropy_gt_0.672": float((ent > 0.672).float().mean()),
            "share_p_gt_0.99": float((p_tok > 0.99).float().mean()), **route_table(texts, rewards)}
    _, grewards, _, _ = sample(toy_problems(32, 4243, split="heldout"), 8)
    prof["mixed_groups_n8"] = mixed_share(grewards, 8)
    recorded = check_targets(json.loads((TOY_DIR / "build.json").read_text())["profile"])
    assert check_targets(prof) == recorded == {k: True for k in TARGETS}, (prof, recorded)


@built
def test_card_and_build_record_state_the_profile():
    facts = json.loads((TOY_DIR / "build.json").read_text())
    card = (TOY_DIR / "README.md").read_text()
    assert "cancel toy build --seed 0" in card and card.startswith("# cancel toy model")
    for k in TARGETS:
        assert k in card and str(facts["profile"][k]) in card
    assert set(check_targets(facts["profile"])) == set(TARGETS)
    assert facts["params"] <= 2_000_000


@built
def test_shipped_weights_are_the_recorded_build_and_a_truncated_rebuild_is_byte_identical(tmp_path):
    """A full rebuild takes minutes on 2 cores, so this rebuilds the same code path truncated at the step
    recorded in build.json and compares its weights hash with the recorded one (byte-identical)."""
    from cancel_cli.toy_fork import build_fork, file_hash

    facts = json.loads((TOY_DIR / "build.json").read_text())
    assert file_hash(TOY_DIR / "model.safetensors") == facts["weights_sha256"]
    rec = facts["truncated_build"]
    f = build_fork(tmp_path / "t", seed=facts["seed"], stop_at=rec["steps"], log=lambda *_: None)
    assert f["steps"] == rec["steps"] and f["weights_sha256"] == rec["weights_sha256"]
    assert f["weights_sha256"] == file_hash(tmp_path / "t" / "model.safetensors")
    assert rec["weights_sha256"] != facts["weights_sha256"]  # the hash does see the weights (truncated != final)


# -- CLI -------------------------------------------------------------------------------------------
def _cli(args):
    from typer.testing import CliRunner

    from cancel_cli.cli import app

    return CliRunner().invoke(app, args)


def test_bad_kind_is_one_line_exit_2(tmp_path):
    res = _cli(["toy", "build", "--kind", "foo", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown toy kind 'foo'" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("model,build", [("toy", "cancel toy build --seed 0"),
                                         ("toy-plain", "cancel toy build --kind plain --seed 0")])
@pytest.mark.parametrize("args", [["toy", "info", "--model", "{m}"], ["toy", "info", "-m", "{m}", "--measure"],
                                  ["mask-effect", "--model", "{m}", "--prompts", "1", "--n", "2"]])
def test_toy_not_built_says_how_to_build(monkeypatch, tmp_path, args, model, build):
    from cancel_cli import config

    monkeypatch.setitem(config.MODELS, model, str(tmp_path / "missing"))
    args = [a.format(m=model) for a in args]
    res = _cli(["--results", str(tmp_path / "results"), *args])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and f"run `{build}`" in line
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("run.json"))


@built
def test_toy_info_measure_remeasures_the_profile_without_device_or_seed_flags():
    """`cancel toy info --measure` with no global flags (device auto, seed 0) on both toys: the fork profile's
    keys, targets checked; the plain toy has no route heading, so every rollout is route ``other``."""
    for model in ("toy", "toy-plain"):
        res = _cli(["--json", "toy", "info", "--model", model, "--measure"])
        assert res.exit_code == 0, res.output
        prof = json.loads(res.output)
        assert set(prof["targets_met"]) == set(TARGETS) and 0 < prof["accuracy"] < 1 and prof["prompts"] == 512
        assert prof["high_entropy_at_digits"] + prof["high_entropy_elsewhere"] == pytest.approx(prof["share_entropy_gt_0.672"], abs=1e-3)
    assert prof["route_other"]["share"] == 1.0 and prof["routes_ge_15pct"] == 0


@built
def test_toy_info_prints_the_card():
    res = _cli(["toy", "info"])
    assert res.exit_code == 0 and res.output.startswith("# cancel toy model")
    res = _cli(["toy", "info", "--model", "toy-plain"])
    assert res.exit_code == 0 and res.output.startswith("# cancel toy-plain model")
    assert _cli(["toy", "info", "--model", "nope"]).exit_code == 2


def test_toy_build_defaults_to_the_fork_kind_into_the_shipped_toy(monkeypatch):
    """`cancel toy build` (no --kind) builds the default toy (fork kind) into assets/toy with the fork target;
    `--kind plain` builds toy-plain into assets/toy-plain with its own target (builders replaced by recorders)."""
    from cancel_cli import toy_fork, toy_model
    from cancel_cli.config import PLAIN_DIR

    calls = []

    def recorder(kind):
        def build(out, seed, target, log):
            calls.append((kind, out, seed, target))
            return {"history": []}
        return build

    monkeypatch.setattr(toy_fork, "build_fork", recorder("fork"))
    monkeypatch.setattr(toy_model, "build_toy", recorder("plain"))
    assert _cli(["toy", "build"]).exit_code == 0
    assert _cli(["--seed", "3", "toy", "build", "--kind", "plain"]).exit_code == 0
    assert calls == [("fork", TOY_DIR, 0, toy_fork.TARGET), ("plain", PLAIN_DIR, 3, (0.40, 0.60))]
