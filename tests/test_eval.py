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
