"""Encoding invariance: the same films stored in other encodings, through the reader and model."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

# Model v5 on 250 validation films (benchmarks/README.md): the worst flip rate was 9.2 % at
# triage for JPEG q50 (8.4 % for a 2x downscale: NIH's 512-px files down to 256 px, under the
# working resolution), 0.8-1.6 % at balanced for 2x down, 2x up and a 2,500-px DICOM; median
# |dp| 0.021 (JPEG q50), AUC drop 0.009. Limits above those, on a 60-image subset:
MAX_FLIP_RATE = 0.15
MAX_MEDIAN_ABS_DP = 0.04
MAX_AUC_DROP = 0.03


def test_lossless_encodings_change_nothing_and_the_report_is_complete(tiny_predictor):
    from encoding_invariance import split_samples
    from pneumo.evaluation import invariance

    samples, table = split_samples(ROOT / "configs" / "data_siim_v2.json", "val", 6)
    report = invariance.invariance_report(
        tiny_predictor,
        samples,
        table,
        ("original", "png", "dicom_raw", "dicom16", "jpeg50"),
        progress=False,
    )
    enc = report["encodings"]
    for lossless in ("png", "dicom_raw", "dicom16"):
        assert enc[lossless]["max_abs_dp"] == 0.0
        assert all(op["flips"] == 0 for op in enc[lossless]["operating_points"].values())
    assert enc["jpeg50"]["max_abs_dp"] > 0.0  # a lossy encoding does reach the model
    assert report["n_images"] == 6 and set(report["summary"]) >= {"max_flip_rate", "worst_auc"}
    table_md = invariance.markdown(report)
    assert table_md.count("\n|") == 1 + len(enc) and "| dicom16 |" in table_md
    with pytest.raises(ValueError, match="start with 'original'"):
        invariance.invariance_report(tiny_predictor, samples, table, ("png",), progress=False)


@pytest.mark.slow
@pytest.mark.bundled
def test_bundled_model_verdicts_hold_across_encodings():
    """60 validation films (30 positive), each in ten encodings and sizes: verdict flips,
    probability changes and AUC stay within the limits measured when the model was packaged."""
    from encoding_invariance import split_samples
    from pneumo.evaluation import invariance
    from pneumo.inference.predictor import Predictor

    samples, table = split_samples(ROOT / "configs" / "data_siim_v2.json", "val", 60)
    names = (
        "original",
        "png",
        "jpeg95",
        "jpeg75",
        "jpeg50",
        "downscale2x",
        "upscale2x",
        "dicom_jpeg",
        "dicom16",
        "dicom16_2500",
    )
    report = invariance.invariance_report(Predictor.load(), samples, table, names, progress=False)
    s = report["summary"]
    print({k: round(v, 4) for k, v in s.items()})
    assert s["max_flip_rate"] <= MAX_FLIP_RATE
    assert s["max_median_abs_dp"] <= MAX_MEDIAN_ABS_DP
    assert s["max_auc_drop"] <= MAX_AUC_DROP


def test_flip_sources_served_mode_is_the_serving_path(tiny_predictor):
    """benchmarks/flip_sources.py: its ``served`` reading is the card's own path, the other
    two modes change only the canonical JPEG step, and the report counts flips by source."""
    import numpy as np

    import flip_sources
    from encoding_invariance import split_samples
    from pneumo.evaluation.invariance import record_as
    from pneumo.inference.preprocess import PreprocessConfig, model_image, resize_image, to_working

    pcfg = PreprocessConfig(size=384, channels=3, jpeg_quality=75, working_size=512)
    samples, _ = split_samples(ROOT / "configs" / "data_siim_v2.json", "val", 4)
    working = to_working(record_as(samples[0], "original").pixels, pcfg.working_size)
    served = flip_sources.mode_image(working, "served", pcfg)
    assert np.array_equal(served, model_image(working, pcfg))
    assert np.array_equal(
        flip_sources.mode_image(working, "no_jpeg", pcfg), resize_image(working, 384)
    )
    averaged = flip_sources.mode_image(working, "jpeg_4_offsets", pcfg)
    diff = np.abs(averaged.astype(int) - served)
    assert 0 < diff.mean() < 2  # the block grid moved, the film did not

    read = flip_sources.readings(tiny_predictor, samples, ["downscale2x"])
    report = flip_sources.summarise(tiny_predictor, samples, read)
    assert set(report) == set(flip_sources.MODES)
    for row in report.values():
        flips = row["encodings"]["downscale2x"]["flips"]
        assert set(flips) == set(tiny_predictor.card.operating_points)
        assert all(0 <= n <= len(samples) for by in flips.values() for n in by.values())
    md = flip_sources.markdown(report, len(samples))
    assert md.count("\n|") == 1 + len(flip_sources.MODES)
