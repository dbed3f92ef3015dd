import dataclasses

import pytest

from cancel_cli.summary import Summary, SummaryError


@dataclasses.dataclass
class DemoSummary(Summary):
    SCHEMA = 2
    boost_rate: float
    n: int


def test_roundtrip_and_schema():
    s = DemoSummary(boost_rate=0.5, n=3)
    d = s.to_json()
    assert d["schema"] == "DemoSummary/v2"
    assert DemoSummary.from_json(d) == s


def test_renamed_or_old_summary_is_refused():
    d = DemoSummary(boost_rate=0.5, n=3).to_json()
    with pytest.raises(SummaryError, match="lacks n"):
        DemoSummary.from_json({k: v for k, v in d.items() if k != "n"})
    with pytest.raises(SummaryError, match="expected a DemoSummary/v2"):
        DemoSummary.from_json({**d, "schema": "DemoSummary/v1"})
    with pytest.raises(SummaryError):
        DemoSummary.from_json({"boost_rate": 0.5, "n": 3})  # an untyped dict of an older version
