import math

import numpy as np
import pytest

from pneumo.evaluation import metrics, operating_points
from pneumo.inference import calibration, postprocess
from pneumo.inference.calibration import evidence

E = np.zeros((4, 4), bool)


def m(*cells):
    a = np.zeros((4, 4), bool)
    for r, c in cells:
        a[r, c] = True
    return a


@pytest.mark.parametrize(
    "truth,pred,expected",
    [
        (E, E, 1.0),  # both empty: SIIM rule
        (E, m((0, 0)), 0.0),  # prediction on an empty image
        (m((0, 0)), E, 0.0),  # missed pneumothorax
        (m((0, 0)), m((0, 0)), 1.0),
        (m((0, 0), (0, 1)), m((0, 1), (0, 2)), 0.5),  # 2*1/(2+2)
        (m((0, 0), (0, 1), (1, 1)), m((0, 0)), 0.5),  # 2*1/(3+1)
    ],
)
def test_dice_table(truth, pred, expected):
    assert metrics.dice(truth, pred) == pytest.approx(expected)


@pytest.mark.parametrize(
    "truth,pred,expected",
    [
        (E, E, 1.0),
        (m((0, 0)), E, 0.0),
        (m((0, 0), (0, 1)), m((0, 1), (0, 2)), 1 / 3),
    ],
)
def test_iou_table(truth, pred, expected):
    assert metrics.iou(truth, pred) == pytest.approx(expected)


@pytest.mark.parametrize(
    "labels,scores,expected",
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1], [0.2, 0.9], 1.0),
        ([0, 1], [0.9, 0.2], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # ties count half
    ],
)
def test_auc_table(labels, scores, expected):
    assert metrics.roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


def test_auc_undefined_with_one_class():
    assert math.isnan(metrics.roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_summary_hand_computed():
    truths = [m((0, 0)), m((1, 1), (1, 2)), E, E]
    preds = [m((0, 0)), m((1, 1)), E, m((3, 3))]
    s = metrics.summarise(truths, preds, np.array([0.9, 0.8, 0.1, 0.7]))
    # dice: 1, 2/3, 1, 0 -> mean 0.6667
    assert s["siim_score"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert s["dice_positive"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["empty_accuracy"] == pytest.approx(0.5)
    assert s["siim_score_reweighted"] == pytest.approx(0.22 * (5 / 6) + 0.78 * 0.5)
    assert s["sensitivity"] == 1.0 and s["specificity"] == 0.5
    assert s["auc"] == pytest.approx(1.0)


def test_mask_threshold_min_area_and_evidence():
    pp = postprocess.PostProcess(
        pixel_threshold=0.5, min_area=3, evidence_pixels=4, reference_size=16
    )
    prob = np.zeros((16, 16), np.float32)
    prob[2:4, 2:4] = 0.9
    prob[10, 10] = 0.6  # a 1-pixel speck: removed by min_area
    mask = postprocess.mask_from_map(prob, pp)
    assert mask.sum() == 4 and not mask[10, 10]
    # evidence: the 4th highest pixel
    assert evidence(prob[None], 4)[0] == pytest.approx(0.9)
    assert evidence(prob[None], 5)[0] == pytest.approx(0.6)


def test_thresholds_scale_with_resolution():
    pp = postprocess.PostProcess(0.5, 20, 40, reference_size=256)
    big = pp.scaled(512)
    assert (big.evidence_pixels, big.min_area) == (160, 80)
    assert postprocess.evidence_pixels(pp, 128) == 10


def test_legacy_card_postprocess_is_read():
    old = {
        "pixel_threshold": 0.6,
        "top_threshold": 0.9,
        "min_top_pixels": 200,
        "min_area": 20,
        "reference_size": 256,
    }
    pp = postprocess.PostProcess.from_dict(old)
    assert (pp.pixel_threshold, pp.min_area, pp.evidence_pixels) == (0.6, 20, 200)


def test_tune_mask_finds_the_clean_threshold():
    rng = np.random.default_rng(0)
    maps, truths = [], []
    for _ in range(6):
        p = rng.random((32, 32)).astype(np.float32) * 0.55  # noise up to 0.55
        t = np.zeros((32, 32), np.uint8)
        t[8:16, 8:16] = 1
        p[8:16, 8:16] = 0.95
        maps.append(p)
        truths.append(t)
    pp, score = operating_points.tune_mask(np.stack(maps), np.stack(truths), 32)
    assert score == pytest.approx(1.0) and pp.pixel_threshold >= 0.6


def test_operating_points_by_hand():
    # 4 positives (probabilities .9 .8 .7 .2), 4 negatives (.6 .3 .1 .05)
    prob = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    dice_if_pos = np.array([0.8, 0.8, 0.8, 0.8, 0.0, 0.0, 0.0, 0.0])
    points = operating_points.choose_operating_points(
        prob, labels, dice_if_pos, np.ones(8, bool), min_sensitivity=0.9, prevalence=0.5
    )
    triage = points["triage"]  # sensitivity 1.0 needs the threshold at 0.2
    assert triage.threshold == pytest.approx(0.2)
    assert (triage.sensitivity, triage.specificity) == (1.0, 0.5)
    balanced = points["balanced"]  # at 0.7: 3 found (0.8 each), all negatives clean
    assert balanced.threshold == pytest.approx(0.7)
    assert (balanced.sensitivity, balanced.specificity) == (0.75, 1.0)
    scores = operating_points.siim_by_threshold(
        prob, dice_if_pos, labels, np.array([0.7, 2.0]), 0.5
    )
    assert scores.tolist() == pytest.approx([0.5 * 0.6 + 0.5 * 1.0, 0.5 * 0.0 + 0.5 * 1.0])


def test_triage_is_always_a_lower_point_than_balanced():
    # balanced already finds every positive (at 0.7), so triage at >= 90 % would land on it
    prob = np.array([0.9, 0.8, 0.75, 0.7, 0.6, 0.3, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    dice_if_pos = np.array([0.8] * 4 + [0.0] * 4)
    points = operating_points.choose_operating_points(
        prob, labels, dice_if_pos, np.ones(8, bool), min_sensitivity=0.9, prevalence=0.5
    )
    assert points["balanced"].threshold == pytest.approx(0.7)
    assert points["triage"].threshold == pytest.approx(0.35)  # half of balanced's
    # with a positive below balanced, triage is the highest threshold that finds more
    prob2 = np.array([0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.1, 0.05])
    points = operating_points.choose_operating_points(
        prob2, labels, dice_if_pos, np.ones(8, bool), min_sensitivity=0.5, prevalence=0.5
    )
    assert points["balanced"].threshold == pytest.approx(0.7)
    assert points["triage"].threshold == pytest.approx(0.4)
    assert points["triage"].sensitivity == 1.0


def test_review_band_lies_between_the_points():
    from pneumo.inference.postprocess import OperatingPoint, review_band

    points = {
        "triage": OperatingPoint("triage", 0.2, 1, 0.5, ""),
        "balanced": OperatingPoint("balanced", 0.6, 0.8, 0.9, ""),
    }
    assert review_band(points, points["balanced"]) == (0.2, 0.6)
    assert review_band(points, points["triage"]) is None


def test_heat_map_follows_the_image_probability():
    m = np.array([[0.0, 0.5], [0.9, 1.2]], np.float32)
    assert postprocess.heat_map(m, None).ravel().tolist() == pytest.approx([0, 0.5, 0.9, 1.0])
    low = postprocess.heat_map(m, 0.05)  # a normal film: nothing near saturation
    assert low.max() == pytest.approx(0.05) and low.dtype == np.float32
    assert postprocess.heat_map(m, 0.5).ravel().tolist() == pytest.approx([0, 0.25, 0.45, 0.5])


@pytest.mark.parametrize(
    "p, frm, to, expected",
    [
        (0.5, 0.5, 0.5, 0.5),
        (0.5, 0.5, 0.2, 0.2),  # no evidence either way: the prior itself
        (0.8, 0.37, 0.37, 0.8),
        # odds 4 x (0.05/0.95) / (0.37/0.63) = 0.3584 -> 0.2638
        (0.8, 0.37, 0.05, 0.3584 / 1.3584),
    ],
)
def test_rebase_probability_by_hand(p, frm, to, expected):
    assert float(postprocess.rebase_probability(p, frm, to)) == pytest.approx(expected, abs=1e-4)


def test_rebase_probability_refuses_impossible_prevalences():
    with pytest.raises(ValueError, match="to_prevalence"):
        postprocess.rebase_probability(0.5, 0.3, 1.0)


def test_platt_calibration_recovers_a_known_logistic_model():
    rng = np.random.default_rng(1)
    head = rng.uniform(0.02, 0.98, 4000)
    true_p = 1 / (1 + np.exp(-(0.5 * calibration.logit(head) - 0.7)))
    labels = rng.random(4000) < true_p
    cal = calibration.fit_calibrator(("head",), head, head, labels)
    assert cal.coef[0] == pytest.approx(0.5, abs=0.1) and cal.intercept == pytest.approx(
        -0.7, abs=0.1
    )
    raw = calibration.reliability(head, labels).ece
    fitted = calibration.reliability(cal.probability(head, head), labels).ece
    assert fitted < 0.03 < raw


def test_choose_calibrator_prefers_the_informative_input():
    rng = np.random.default_rng(2)
    labels = rng.random(600) < 0.4
    head = np.where(labels, rng.uniform(0.4, 0.99, 600), rng.uniform(0.01, 0.6, 600))
    noise = rng.uniform(0.01, 0.99, 600)  # evidence carrying no information
    cal, losses = calibration.choose_calibrator(head, noise, labels)
    assert "head" in cal.features and losses["head"] < losses["evidence"]
    assert calibration.Calibrator.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="head"):
        cal.probability(None, noise)


def test_reliability_and_ece_by_hand():
    probs = np.array([0.05, 0.15, 0.95, 0.95])
    labels = np.array([0, 1, 1, 1])
    rel = calibration.reliability(probs, labels, bins=10)
    assert rel.counts[0] == 1 and rel.counts[1] == 1 and rel.counts[9] == 2
    # bins: |0-0.05|*1/4 + |1-0.15|*1/4 + |1-0.95|*2/4
    assert rel.ece == pytest.approx(0.05 / 4 + 0.85 / 4 + 0.05 * 2 / 4)


def test_auc_by_source_is_the_within_source_auc():
    from pneumo.evaluation.scoring import auc_by_source

    # a model that only recognises the source: perfect overall, chance within each source
    source = np.array(["siim"] * 6 + ["nih"] * 6)
    labels = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0], bool)
    prob = np.where(source == "siim", 0.9, 0.1)
    assert metrics.roc_auc(labels, prob) == pytest.approx((16 + 4 + 4) / 36)  # well above 0.5
    out = auc_by_source(prob, labels, source)
    assert out["siim"]["auc"] == 0.5 and out["nih"]["auc"] == 0.5
    assert out["siim"]["n_positive"] == 4 and out["nih"]["n_negative"] == 4
    assert auc_by_source(prob, labels, None) == {}
    only_neg = auc_by_source(prob[labels == 0], labels[labels == 0], source[labels == 0])
    assert only_neg["nih"]["auc"] is None


def test_figures_within_each_source_cannot_be_earned_by_telling_sources_apart():
    """Issue 32 item 3: a model that only recognises the source scores a perfect pooled AUC
    here, and chance within each source; the card leads with the latter."""
    from types import SimpleNamespace

    from pneumo.evaluation import metrics
    from pneumo.evaluation.cardrender import source_lines
    from pneumo.evaluation.scoring import by_source

    source = np.array(["siim"] * 6 + ["nih"] * 6)
    labels = np.array([1, 1, 1, 1, 1, 0] + [0, 0, 0, 0, 0, 1], bool)
    prob = np.where(source == "siim", 0.9, 0.1)  # the source, not the chest
    card = SimpleNamespace(operating_points={"balanced": SimpleNamespace(threshold=0.5)})
    per = by_source(card, prob, labels, source)
    assert metrics.roc_auc(labels, prob) > 0.8
    assert per["siim"]["auc"] == 0.5 and per["nih"]["auc"] == 0.5
    assert per["nih"]["operating_points"]["balanced"] == {"sensitivity": 0.0, "specificity": 1.0}
    assert per["siim"]["operating_points"]["balanced"]["specificity"] == 0.0
    lines = source_lines({"by_source": per, "ci95": {"siim.auc": [0.2, 0.8]}}, card)
    assert any(
        line.startswith("- SIIM (5 positive / 1 negative): AUC 0.500 (0.200 to 0.800)")
        for line in lines
    ), lines


def test_the_review_band_holds_few_normal_films_of_any_source():
    """Issue 32 item 4: the sub-threshold note shows on at most one normal film in ten of
    every source; the band never reaches below the next operating point."""
    from pneumo.evaluation.operating_points import review_floor
    from pneumo.inference.postprocess import OperatingPoint, review_band

    rng = np.random.default_rng(0)
    prob = np.concatenate([rng.uniform(0, 0.7, 100), rng.uniform(0, 0.3, 50), [0.9] * 20])
    labels = np.array([False] * 150 + [True] * 20)
    source = np.array(["nih"] * 100 + ["siim"] * 50 + ["siim"] * 20)
    floor = review_floor(prob, labels, 0.66, source)
    for s in ("nih", "siim"):
        neg = (~labels) & (source == s)
        assert ((prob >= floor) & (prob < 0.66) & neg).sum() <= 0.10 * neg.sum()
    points = {
        "triage": OperatingPoint("triage", 0.12, 0.95, 0.7, ""),
        "balanced": OperatingPoint("balanced", 0.66, 0.8, 0.98, ""),
    }
    assert review_band(points, points["balanced"], floor) == (max(0.12, floor), 0.66)
    assert review_band(points, points["balanced"], 0.01) == (0.12, 0.66)
    assert review_band(points, points["balanced"], 0.7) is None
    assert review_band(points, points["triage"], floor) is None
