"""REPORT header: the embedded toy's model card line (profile, routes, targets it misses)."""

import json

from cancel_cli import report_header
from cancel_cli.toy_fork import TARGETS


def test_toy_card_states_profile_and_names_missed_targets():
    from pathlib import Path

    facts = json.loads((Path(report_header.__file__).parent / "assets" / "toy" / "build.json").read_text())
    prof = facts["profile"]
    line = report_header.card_lines("toy")[0]
    assert f"accuracy {prof['accuracy']:.3f}" in line
    assert f"{prof['share_entropy_gt_0.672']:.3f} of response tokens with entropy > 0.672" in line
    assert "routes carrying" in line and "mixed GRPO groups" in line
    assert (f"(digits {prof['high_entropy_at_digits']:.3f}, route letters and wording "
            f"{prof['high_entropy_elsewhere']:.3f})") in line
    missed = [k for k, (lo, hi) in TARGETS.items() if not lo <= prof[k] <= hi]
    assert ("all met" in line) == (not missed)
    for k in missed:
        assert k in line


def test_plain_toy_card_and_no_card_for_hub_models():
    assert "no forking decisions" in report_header.card_lines("toy-plain")[0]
    assert "cancel toy build --kind plain --seed 0" in report_header.card_lines("toy-plain")[0]
    assert report_header.card_lines("qwen3-4b") == []
