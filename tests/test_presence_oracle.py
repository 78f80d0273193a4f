"""The presence oracle (bench/presence_oracle.py) is only a bound if it works: it must place shoppers where the
radio says they are, and must not where the radio says nothing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import presence_oracle  # noqa: E402
import presence_quality  # noqa: E402


def _at(res: dict, threshold: float) -> dict:
    return next(r for r in res["frontier"] if r["threshold"] == threshold)


def test_the_oracle_shows_shoppers_in_their_zone_in_a_quiet_store() -> None:
    res = presence_oracle.run(presence_quality.Layout(5.0, 3.0), minutes=3, seed=3, shoppers_at_once=6,
                              thresholds=(0.9,))
    r = _at(res, 0.9)
    assert r["stays"] >= 15
    assert r["right_pct"] >= 97.0
    assert r["latency_p90_s"] <= 6.0
    assert r["false_per_h"] <= 1.0


def test_the_oracle_cannot_place_shoppers_when_the_readings_carry_no_information() -> None:
    res = presence_oracle.run(presence_quality.Layout(5.0, 60.0), minutes=3, seed=3, shoppers_at_once=6,
                              thresholds=(0.5, 0.9))
    assert _at(res, 0.5)["stays"] >= 15
    assert _at(res, 0.5)["right_pct"] < 50.0  # a zone is shown, mostly the wrong one
    assert _at(res, 0.9)["right_pct"] < 50.0


def test_the_oracle_without_the_phones_offsets_still_places_shoppers() -> None:
    res = presence_oracle.run(presence_quality.Layout(5.0, 3.0), minutes=2, seed=3, shoppers_at_once=4,
                              offset="unknown", thresholds=(0.9,))
    assert _at(res, 0.9)["right_pct"] >= 95.0


def test_a_filter_over_positions_with_the_radio_model_wrong_loses_shoppers_it_placed_with_it_right() -> None:
    """The bound holds only for a filter that knows the radio: assume a path-loss exponent far from the
    simulated one and the same readings put shoppers in the wrong zones (what a store with gateway positions
    but a wrong radio model would get)."""
    layout = presence_quality.Layout(8.0, 3.0)
    right = _at(presence_oracle.run(layout, minutes=3, seed=3, shoppers_at_once=6, thresholds=(0.9,)), 0.9)
    wrong = _at(presence_oracle.run(layout, minutes=3, seed=3, shoppers_at_once=6, thresholds=(0.9,),
                                    exponent=4.0), 0.9)
    assert right["right_pct"] >= 97.0 and right["false_per_h"] <= 1.0
    assert wrong["right_pct"] < 80.0 or wrong["false_per_h"] > 10.0
