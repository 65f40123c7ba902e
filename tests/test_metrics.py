import math

import numpy as np
import pytest

from pneumo import metrics, postprocess

E = np.zeros((4, 4), bool)


def m(*cells):
    a = np.zeros((4, 4), bool)
    for r, c in cells:
        a[r, c] = True
    return a


@pytest.mark.parametrize("truth,pred,expected", [
    (E, E, 1.0),                                   # both empty: SIIM rule
    (E, m((0, 0)), 0.0),                           # prediction on an empty image
    (m((0, 0)), E, 0.0),                           # missed pneumothorax
    (m((0, 0)), m((0, 0)), 1.0),
    (m((0, 0), (0, 1)), m((0, 1), (0, 2)), 0.5),   # 2*1/(2+2)
    (m((0, 0), (0, 1), (1, 1)), m((0, 0)), 0.5),   # 2*1/(3+1)
])
def test_dice_table(truth, pred, expected):
    assert metrics.dice(truth, pred) == pytest.approx(expected)


@pytest.mark.parametrize("truth,pred,expected", [
    (E, E, 1.0), (m((0, 0)), E, 0.0), (m((0, 0), (0, 1)), m((0, 1), (0, 2)), 1 / 3),
])
def test_iou_table(truth, pred, expected):
    assert metrics.iou(truth, pred) == pytest.approx(expected)


@pytest.mark.parametrize("labels,scores,expected", [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
    ([0, 1], [0.2, 0.9], 1.0),
    ([0, 1], [0.9, 0.2], 0.0),
    ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # ties count half
])
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


def test_triplet_gate_and_min_area():
    pp = postprocess.PostProcess(pixel_threshold=0.5, top_threshold=0.8, min_top_pixels=4,
                                 min_area=3, reference_size=16)
    prob = np.zeros((16, 16), np.float32)
    prob[2:4, 2:4] = 0.7          # 4 pixels above 0.5 but none above 0.8 -> gated out
    mask, score, positive = postprocess.apply(prob, pp)
    assert not positive and not mask.any() and score == pytest.approx(0.7)
    prob[2:4, 2:4] = 0.9          # now 4 pixels above 0.8 -> positive
    prob[10, 10] = 0.6            # a 1-pixel speck: removed by min_area
    mask, score, positive = postprocess.apply(prob, pp)
    assert positive and mask.sum() == 4 and not mask[10, 10]


def test_thresholds_scale_with_resolution():
    pp = postprocess.PostProcess(0.5, 0.8, 40, 20, reference_size=256)
    big = pp.scaled(512)
    assert (big.min_top_pixels, big.min_area) == (160, 80)


def test_grid_search_prefers_gate_that_clears_false_positives():
    rng = np.random.default_rng(0)
    probs, truths = [], []
    for i in range(10):
        p = rng.random((32, 32)).astype(np.float32) * 0.55   # noise up to 0.55
        t = np.zeros((32, 32), bool)
        if i % 2:
            t[8:16, 8:16] = True
            p[8:16, 8:16] = 0.95
        probs.append(p); truths.append(t)
    pp, score = postprocess.grid_search(probs, truths, 32)
    assert score == pytest.approx(1.0)
    assert pp.pixel_threshold >= 0.6 or pp.top_threshold > 0.55


def test_grid_search_uses_the_given_prevalence():
    # one positive found with one false positive on a negative, vs. predicting nothing
    t_pos = np.zeros((16, 16), bool); t_pos[4:8, 4:8] = True
    p_pos = t_pos.astype(np.float32) * 0.95
    p_neg = np.zeros((16, 16), np.float32); p_neg[10:14, 10:14] = 0.95
    probs, truths = [p_pos, p_neg], [t_pos, np.zeros((16, 16), bool)]
    grid = dict(pixel_thresholds=(0.5,), top_thresholds=(0.9, 0.99), min_top_pixels=(4,),
                min_areas=(0,))
    _, balanced = postprocess.grid_search(probs, truths, 16, prevalence=0.5, **grid)
    _, skewed = postprocess.grid_search(probs, truths, 16, prevalence=0.22, **grid)
    assert balanced == pytest.approx(0.5)   # finding it: 0.5*1 + 0.5*0
    assert skewed == pytest.approx(0.78)    # predicting nothing wins at 22 %
