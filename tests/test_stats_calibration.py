"""The FER significance test holds its nominal level at the seed counts we run (3 seeds, 560 test images),
whatever the per-seed spread, and its reported detectable difference is what it detects::

    .venv/bin/python -m pytest tests/test_stats_calibration.py -q

Null simulation (``ifer.report.stats.simulate_pairs``): 4 equal methods x 3 seeds x 560 images, per-image
correctness with a shared image difficulty (the pairing) and an independent per-(method, seed) accuracy shift
of sd 0..5 points; 2,000 replications per spread, seeded. The bar is set before measuring: nominal 5% plus three
binomial standard errors of the replication count, ``0.05 + 3 sqrt(0.05 · 0.95 / 2000)`` = 6.5%.
"""
import math

import pytest

from ifer.report.stats import ALPHA, detectable_difference, simulate_pairs

REPS = 2000
BAR = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)
# 0..5 points, with the spreads the issue quotes (1.5, 2.1, 3.3, 4.6) and IFER's (2.9)
SPREADS = (0.0, 1.0, 1.5, 2.1, 2.9, 3.3, 4.6, 5.0)


@pytest.mark.parametrize("spread", SPREADS)
def test_type_one_error_at_three_seeds_stays_at_nominal(spread):
    r = simulate_pairs(spread, n_seeds=3, n_images=560, reps=REPS, seed=0)
    assert r["reps"] == REPS and r["n_seeds"] == 3
    assert r["rate"] <= BAR, f"paired t test rejects {r['rate']:.1%} of equal pairs at spread {spread} points"
    # Holm over the 6 pairs of 4 equal methods: the chance of naming any winner stays at nominal too
    assert r["fwer"] <= BAR, f"Holm family-wise error {r['fwer']:.1%} at spread {spread} points"
    # and the test is not trivially conservative: it does reject about 5% (a test that never rejects would pass above)
    assert r["rate"] >= ALPHA - 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)


@pytest.mark.parametrize("spread", (0.0, 2.9, 5.0))
def test_reported_detectable_difference_is_detected_with_80_percent_power(spread):
    null = simulate_pairs(spread, reps=REPS, seed=1)
    sd_diff = 100 * math.sqrt(null["mean_var_diff"])  # the per-seed differences' true sd, in points
    delta = detectable_difference(sd_diff, 3, ALPHA)
    shifted = simulate_pairs(spread, shift_points=delta, reps=REPS, seed=2)
    # 80% expected; +-5 points covers Monte-Carlo error (sd 0.9 points) and the model's small non-normality
    assert abs(shifted["rate_shifted"] - 0.8) < 0.05, (spread, delta, shifted["rate_shifted"])
