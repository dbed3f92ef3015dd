import json


from cancel_cli.tasks.reward import _verify, score, score_batch


def test_fraction_equals_decimal():
    assert score("so \\boxed{\\frac{1}{2}}", "0.5") == 1.0


def test_wrong_answers_score_zero():
    assert score("\\boxed{3}", "4") == 0.0
    assert score("no answer here", "4") == 0.0
    assert score("\\boxed{\\frac{1}{3}}", "0.5") == 0.0


def test_integer_fast_path_agrees_with_math_verify(toy_batch, toy):
    texts = [toy.decode(r[m.bool()].tolist()) for r, m in zip(toy_batch.response_ids, toy_batch.response_mask)]
    fast = score_batch(texts, toy_batch.answers)
    slow = [_verify(t, g) for t, g in zip(texts, toy_batch.answers)]
    assert fast == slow
    assert 0 < sum(fast) < len(fast)


def test_every_gold_answer_scores_one_against_itself(shared_data):
    golds = []
    for f in sorted(shared_data.glob("*.jsonl")):
        golds += [json.loads(line)["answer"] for line in f.open()]
    assert len(golds) > 18000
    scores = score_batch([f"The final answer is \\boxed{{{g}}}." for g in golds], golds)
    bad = [g for g, s in zip(golds, scores) if s != 1.0]
    assert not bad, bad[:10]


def test_pathological_expression_times_out_to_zero():
    s = score("\\boxed{9^{9^{9^{9^{9}}}}}", "9^{9^{9^{9^{9}}}} + 1", timeout=2)
    assert s == 0.0
