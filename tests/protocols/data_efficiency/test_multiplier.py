"""The multiplier: sustained and first crossings in log bases, NaN, never reached, over seeds."""

from __future__ import annotations

import math

import pytest

from hnet_dna.protocols.data_efficiency import (
    data_multiplier,
    multiplier_summary,
)


# ------------------------------------------------------------------------------ multiplier
def test_multiplier_interpolates_the_crossing_in_log_bases():
    baseline = [(1e3, 2.1), (1e4, 1.9), (1e5, 1.7)]  # final: 1.7 bits after 1e5 bases
    for rule in ("sustained", "first"):  # a curve that comes down once: both rules agree
        # Crosses 1.7 halfway (in bits) between 1e4 (1.8) and 1e5 (1.6): 10^4.5 bases, 1e5 / 10^4.5 = sqrt(10).
        assert data_multiplier([(1e3, 2.0), (1e4, 1.8), (1e5, 1.6)], baseline, rule) == pytest.approx(math.sqrt(10))
        # Exactly on a point: 2e4 bases needed -> 5x.
        assert data_multiplier([(1e3, 2.0), (2e4, 1.7), (1e5, 1.6)], baseline, rule) == pytest.approx(5.0)
        # Already below at the first point: that point's bases (a lower bound; never extrapolated).
        assert data_multiplier([(1e3, 1.69), (1e4, 1.6)], baseline, rule) == pytest.approx(100.0)
        # Points given out of order are sorted first.
        assert data_multiplier([(1e5, 1.6), (1e3, 2.0), (1e4, 1.8)], baseline[::-1], rule) == pytest.approx(math.sqrt(10))


def test_multiplier_of_a_curve_that_dips_then_rises_is_the_sustained_crossing():
    baseline = [(1e3, 2.1), (1e4, 1.9), (1e5, 1.7)]
    # Dips to 1.65 at 1e3.5, back up to 1.75 at 1e4, then down for good: 1.6 at 1e5.
    curve = [(1e3, 2.0), (10**3.5, 1.65), (1e4, 1.75), (1e5, 1.6)]
    # Sustained (the headline): from the last point above the target (1e4, 1.75) to (1e5, 1.6):
    # (1.75 - 1.7) / (1.75 - 1.6) = 1/3 of the way in log10 -> 10^(4 + 1/3) bases.
    assert data_multiplier(curve, baseline) == pytest.approx(1e5 / 10 ** (4 + 1 / 3))
    assert data_multiplier(curve, baseline, "sustained") == data_multiplier(curve, baseline)
    # First crossing (kept beside it): (2.0 - 1.7) / (2.0 - 1.65) = 6/7 of the way from 1e3 to 1e3.5.
    assert data_multiplier(curve, baseline, "first") == pytest.approx(1e5 / 10 ** (3 + 0.5 * 6 / 7))
    # Back above the target at the last point: not reached for good, though it crossed once.
    rises = [(1e3, 2.0), (1e4, 1.65), (1e5, 1.75)]
    assert data_multiplier(rises, baseline) is None
    assert data_multiplier(rises, baseline, "first") == pytest.approx(1e5 / 10 ** (3 + 6 / 7))
    with pytest.raises(ValueError, match="rule"):
        data_multiplier(curve, baseline, "best")


def test_multiplier_of_nan_curves_and_the_lower_bound_flag():
    from hnet_dna.protocols.data_efficiency.multiplier import multiplier_is_lower_bound

    baseline = [(1e3, 2.1), (1e5, 1.7)]
    assert data_multiplier([(1e3, 2.0), (1e5, 1.6)], [(1e3, 2.1), (1e5, float("nan"))]) is None  # diverged baseline
    assert data_multiplier([(1e3, 1.6), (1e5, float("nan"))], baseline) is None  # the H-Net diverged at the end
    # Below the target at the first point, above it later, below at the end: the sustained crossing
    # is interpolated (not a lower bound); the first crossing is at the first point (a lower bound).
    curve = [(1e3, 1.6), (1e4, 1.8), (1e5, 1.65)]
    assert not multiplier_is_lower_bound(curve, baseline, "sustained")
    assert multiplier_is_lower_bound(curve, baseline, "first")
    assert multiplier_is_lower_bound([(1e3, 1.6), (1e5, 1.5)], baseline, "sustained")


def test_multiplier_is_none_when_never_reached():
    for rule in ("sustained", "first"):
        assert data_multiplier([(1e3, 2.0), (1e4, 1.8), (1e5, 1.71)], [(1e3, 2.1), (1e5, 1.7)], rule) is None


def test_multiplier_summary_over_seeds():
    s = multiplier_summary({0: 2.0, 1: 4.0})
    assert s["reached"] and s["mean"] == pytest.approx(3.0) and s["sd"] == pytest.approx(math.sqrt(2))
    s = multiplier_summary({0: 2.0, 1: None})
    assert s == {"per_seed": {"0": 2.0, "1": None}, "mean": None, "sd": None, "reached": False, "seeds_reached": 1,
                 "lower_bound": False}
    assert multiplier_summary({0: 2.0, 1: 4.0}, {0: False, 1: True})["lower_bound"]


def test_a_nan_point_before_the_crossing_gives_the_crossing_points_bases_never_nan():
    from hnet_dna.protocols.data_efficiency.multiplier import multiplier_is_lower_bound

    baseline = [(1e3, 2.1), (1e5, 1.7)]
    curve = [(1e3, 2.0), (1e4, float("nan")), (1e5, 1.6)]  # diverged evaluation, then below the target
    for rule in ("sustained", "first"):
        assert data_multiplier(curve, baseline, rule) == 1.0  # B / b* with b* = 1e5: nothing interpolated from NaN
        assert multiplier_is_lower_bound(curve, baseline, rule)  # so the multiplier is a lower bound
    assert not multiplier_is_lower_bound([(1e3, 2.0), (1e4, 1.9), (1e5, 1.6)], baseline)  # interpolated: exact
    summary = multiplier_summary({0: data_multiplier(curve, baseline), 1: 2.0})
    assert summary["reached"] and summary["mean"] == 1.5
    # and a NaN that does reach a summary (a diverged model's final bits) is written as null, never NaN
    import json

    from hnet_dna.runs import json_text

    text = json_text({"final_bits_per_base": float("nan"), "per_seed": [1.0, float("inf")]})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"final_bits_per_base": None, "per_seed": [1.0, None]}
