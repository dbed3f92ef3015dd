import numpy as np
import pandas as pd
import pytest

from cancel_cli.evaluation import avg_at_k, benchmark_k, pass_at_1, score_frame
from cancel_cli.tasks.data import BENCHMARKS, load_benchmark
from cancel_cli.tasks.reward import score_batch


def test_avg_at_k_and_pass_at_1_on_hand_made_samples():
    correct = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert avg_at_k(correct) == pytest.approx((0.75 + 0 + 1) / 3)
    assert pass_at_1(correct) == pytest.approx(2 / 3)
    df = pd.DataFrame({"problem_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 4, "sample": list(range(4)) * 3,
                       "correct": correct.reshape(-1)})
    assert score_frame(df, 4) == pytest.approx(avg_at_k(correct))
    assert score_frame(df[df["sample"] == 0], 1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        avg_at_k(np.array([]))


def test_paper_metrics_per_benchmark():
    assert [benchmark_k(b) for b in ("aime24", "aime25", "amc23")] == [32, 32, 32]
    assert [benchmark_k(b) for b in ("math500", "minerva", "olympiadbench")] == [1, 1, 1]


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_gold_answers_score_100_and_shifted_answers_0(name, shared_data):
    probs = load_benchmark(name)  # found through $CANCEL_DATA
    golds = [p.answer for p in probs]
    right = score_batch([f"Thus the answer is \\boxed{{{g}}}." for g in golds], golds)
    assert np.mean(right) == 1.0
    shifted = score_batch([f"Thus the answer is \\boxed{{{g}}}." for g in golds[1:] + golds[:1]], golds)
    # a shifted answer is wrong unless two neighbouring problems share the same answer
    same = sum(a == b for a, b in zip(golds, golds[1:] + golds[:1]))
    assert np.sum(shifted) <= same + 0.01 * len(golds), (np.sum(shifted), same)


def test_missing_data_file_is_a_clear_error(tmp_path, monkeypatch):
    from cancel_cli.errors import UserError
    from cancel_cli.tasks import data

    monkeypatch.setattr(data, "data_dirs", lambda d=None: [tmp_path])
    with pytest.raises(UserError, match="cancel data download"):
        data.load_benchmark("aime24")


def test_data_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cancel_cli.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    res = CliRunner().invoke(app, ["data", "download", "aime24", "--out", str(tmp_path)])
    assert res.exit_code == 2 and res.output.startswith("error:"), res.output


# -- `cancel eval` end to end on hand-made sample tables (sampling replaced, arithmetic and store real) --------
HAND = {0: [1, 0, 1, 1], 1: [0, 0, 0, 0], 2: [1, 1, 0, 1]}  # problem index -> correctness of its samples


def fake_samples(calls):
    def sample_and_score(policy, problems, k, temperature, top_p, max_new_tokens, template, generator, sampler=None):
        calls.append((len(problems), k, temperature, top_p))
        return pd.DataFrame([{"problem_id": p.id, "sample": j, "answer": p.answer, "response": "", "length": 1,
                              "truncated": False, "correct": float(HAND[i][j])} for i, p in enumerate(problems)
                             for j in range(k)])
    return sample_and_score


def eval_cli(tmp_path, *args):
    from typer.testing import CliRunner

    from cancel_cli.cli import app

    return CliRunner().invoke(app, ["--results", str(tmp_path), "--quiet", "--json", "eval", "--limit", "3", *args])


def test_eval_avg_at_k_and_pass_at_1_through_the_store(tmp_path, monkeypatch):
    import json

    from cancel_cli.analysis import evaluate
    from cancel_cli.store import Store

    calls = []
    monkeypatch.setattr(evaluate, "sample_and_score", fake_samples(calls))
    res = eval_cli(tmp_path, "--k", "4", "--benchmarks", "toy-2digit,toy-3digit")
    assert res.exit_code == 0, res.output
    run = Store(tmp_path).get(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    s = evaluate.EvalSummary.of(run)
    expected = (0.75 + 0.0 + 0.75) / 3  # avg@4 by hand
    assert s.scores["T0.6/p0.95"] == pytest.approx({"toy-2digit": expected, "toy-3digit": expected})
    assert s.average == pytest.approx(expected) and s.samples == {"toy-2digit": 12, "toy-3digit": 12}
    assert s.metrics == {"toy-2digit": "avg@4", "toy-3digit": "avg@4"}
    assert calls == [(3, 4, 0.6, 0.95)] * 2
    res = eval_cli(tmp_path, "--k", "1", "--benchmarks", "toy-2digit")
    run = Store(tmp_path).get(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    assert evaluate.EvalSummary.of(run).average == pytest.approx(2 / 3)  # pass@1: first samples 1, 0, 1


def test_eval_resume_continues_without_duplicates(tmp_path, monkeypatch):
    from cancel_cli.analysis import evaluate
    from cancel_cli.store import Store

    calls = []
    good = fake_samples(calls)

    def crash_on_second(*a, **kw):
        if len(calls) == 1:
            raise KeyboardInterrupt
        return good(*a, **kw)

    monkeypatch.setattr(evaluate, "sample_and_score", crash_on_second)
    cfg = evaluate.EvalConfig(benchmarks="toy-2digit,toy-3digit,toy-4digit", limit=3, k=2)
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(cfg, store)
    (run,) = store.runs("eval")
    assert run.status == "failed" and run.done_parts("scores") == {0}
    monkeypatch.setattr(evaluate, "sample_and_score", good)
    evaluate.run(cfg, store, resume=run.id)
    assert len(calls) == 3  # job 0 once before the crash, jobs 1 and 2 after the resume
    res = store.get(run.id).read_table("results")
    assert sorted(res.benchmark) == ["toy-2digit", "toy-3digit", "toy-4digit"]
    assert res.score.tolist() == pytest.approx([0.5] * 3)  # avg@2: (1/2 + 0 + 1) / 3


def test_eval_run_evaluates_every_checkpoint_of_a_train_run(tmp_path, monkeypatch, toy):
    import json

    from cancel_cli.analysis import evaluate
    from cancel_cli.store import Store

    store = Store(tmp_path)
    tr = store.new_run("train", {"model": "toy"}, model="toy", seed=0)
    for step in (2, 4):
        toy.model.save_pretrained(tr.path / "checkpoints" / f"step-{step:05d}")
        toy.tokenizer.save_pretrained(tr.path / "checkpoints" / f"step-{step:05d}")
    tr.finish()
    calls = []
    monkeypatch.setattr(evaluate, "sample_and_score", fake_samples(calls))
    res = eval_cli(tmp_path, "--run", tr.id, "--k", "2", "--benchmarks", "toy-2digit")
    assert res.exit_code == 0, res.output
    run = store.get(json.loads(res.stdout.strip().splitlines()[-1])["id"])
    out = run.read_table("results")
    assert out.step.tolist() == [2, 4] and out.target.tolist() == [f"{tr.id}@step-00002", f"{tr.id}@step-00004"]
    s = evaluate.EvalSummary.of(run)
    assert (s.run, s.final_step, s.base_model) == (tr.id, 4, "toy")
    other = store.new_run("eval", {})
    other.finish()
    bad = eval_cli(tmp_path, "--run", other.id)
    assert bad.exit_code == 2 and bad.output.startswith("error:") and len(bad.output.strip().splitlines()) == 1
