"""Self-training's pseudo-labels (issue 32, item 8): unlabelled SIIM films a model reads as
normal become train-only negatives, never tune or validation films."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, SIIM
from pneumo.data import dataset, pseudo
from pneumo.data.datacfg import DataConfig
from pneumo.io import rle


def test_confident_negatives_and_their_expected_contamination():
    scores = {"b": 0.05, "a": 0.01, "c": 0.5, "d": 0.2, "e": 0.9}
    chosen = pseudo.confident_negatives(scores, 0.124)
    assert chosen.negatives == ["a", "b"] and chosen.read == 5 and chosen.fraction == 0.4
    # 1,000 films at 22 % prevalence, 3 % of positives under the threshold: 6.6 expected
    # positives among the 400 negatives kept
    many = pseudo.Selection([f"n{i}" for i in range(400)], 1000)
    assert pseudo.contamination(many, 0.22, 0.03) == pytest.approx(6.6 / 400)
    assert pseudo.contamination(pseudo.Selection([], 10), 0.22, 0.03) == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        pseudo.confident_negatives(scores, 1.5)
    # a held-out share is never pseudo-labelled: it measures flag rates on unseen films
    ids = [f"ID_{i:05d}" for i in range(2000)]
    half = pseudo.held_out(ids, 0.5)
    assert 900 < len(half) < 1100 and half == pseudo.held_out(list(reversed(ids)), 0.5)
    low = {i: 0.01 for i in ids}
    kept = pseudo.confident_negatives(low, 0.124, half)
    assert kept.read == 2000 - len(half) and not set(kept.negatives) & half


def _unlabelled_stage2(rle_table) -> list:
    """The SIIM stage-2 test DICOMs in the shared data (no public label)."""
    result = dataset.build_index([SIIM], rle_table)
    films = [s for s in result.unlabelled if s.format == "DICOM"]
    assert len(films) >= 3
    return films[:3]


def test_pseudo_labelled_films_only_ever_train(tmp_path, rle_table):
    films = _unlabelled_stage2(rle_table)
    folder = tmp_path / "stage2"
    folder.mkdir()
    for s in films:
        (folder / f"{s.image_id}.dcm").symlink_to(s.path)
    scores = tmp_path / "scores.csv"
    scores.write_text(
        "ImageId,probability,area_px,threshold,operating_point\n"
        f"{films[0].image_id},0.02,0,0.12,triage\n"
        f"{films[1].image_id},0.08,0,0.12,triage\n"
        f"{films[2].image_id},0.71,5000,0.12,triage\n"
    )
    labels = tmp_path / "pseudo.csv"
    out = subprocess.run(
        [sys.executable, "-m", "pneumo.cli", "pseudo-label", "--scores", str(scores)]
        + ["--below", "0.124", "--out", str(labels), "--missed", "0.03"]
        + ["--held-out-list", str(tmp_path / "held_out.txt")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["read"] == 3 and report["negatives"] == 2 and report["held_out"] == 0
    assert (tmp_path / "held_out.txt").read_text() == ""
    assert report["expected_contamination"] == pytest.approx(3 * 0.22 * 0.03 / 2, abs=1e-4)
    table = rle.read_rle_csv(labels)
    assert set(table) == {films[0].image_id, films[1].image_id}
    assert not any(rle.is_positive(v) for v in table.values())

    base = json.loads((ROOT / "configs" / "data_siim_v2.json").read_text())
    base["train_only"] = [{"images": str(folder), "rle_csv": str(labels)}]
    for key in ("image_dirs", "id_maps"):
        base[key] = [str((ROOT / "configs" / p).resolve()) for p in base[key]]
    for key in ("rle_csv", "nih_index", "nih_images", "base_split", "split"):
        base[key] = str((ROOT / "configs" / base[key]).resolve())
    config = tmp_path / "data.json"
    config.write_text(json.dumps(base))
    dcfg = DataConfig.load(config)
    extra = dcfg.train_only_samples()
    assert sorted(s.image_id for s in extra) == sorted(table)
    assert all(s.positive is False and s.has_mask and s.source == "siim" for s in extra)
    # the split the config defines (what `pneumo index --write` writes) never holds them
    _, samples = dcfg.samples()
    assert not {s.image_id for s in samples} & set(table)
    assert not set(dcfg.make_split(samples)) & set(table)

    from pneumo.training.config import TrainConfig
    from pneumo.training.data import split_samples

    data = split_samples(TrainConfig(data=str(config)))
    ids = {name: {s.image_id for s in items} for name, items in data.samples.items()}
    assert set(table) <= ids["train"]
    assert not set(table) & (ids["tune"] | ids["val"])
    assert ids["val"] == {k for k, v in dataset.read_split(dcfg.split).items() if v == "val"}

    (folder / f"{films[0].image_id}.dcm").unlink()
    folder.rename(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="train-only images missing"):
        dcfg.train_only_samples()


def test_a_pseudo_labelled_copy_of_a_validation_film_is_found_and_dropped(tmp_path):
    """SIIM's films are NIH ChestX-ray14 images: an unlabelled SIIM film can be a
    validation film itself. The check finds such a copy and --drop removes it."""
    import shutil

    v2 = DataConfig.load(ROOT / "configs" / "data_siim_v2.json")
    split = dataset.read_split(v2.split)
    val_nih = sorted(k for k, v in split.items() if v == "val" and k.startswith("nih:"))[0]
    train_nih = sorted(k for k, v in split.items() if v == "train" and k.startswith("nih:"))[0]
    folder = tmp_path / "films"
    folder.mkdir()
    shutil.copy(v2.nih_images / val_nih[4:], folder / "ID_copy.png")
    shutil.copy(v2.nih_images / train_nih[4:], folder / "ID_other.png")
    labels = tmp_path / "pseudo.csv"
    pseudo.write_labels(labels, ["ID_copy", "ID_other"])
    raw = json.loads((ROOT / "configs" / "data_siim_v2.json").read_text())
    raw["train_only"] = [{"images": str(folder), "rle_csv": str(labels)}]
    config = ROOT / "configs" / f".test_{tmp_path.name}.json"  # relative paths as in v2
    config.write_text(json.dumps(raw))
    try:
        script = [sys.executable, str(ROOT / "scripts" / "check_train_only.py"), str(config)]
        found = subprocess.run(script, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert found.returncode == 1, found.stderr[-2000:]
        copies = json.loads(found.stdout)["copies"]
        assert copies == [{"train_only": "ID_copy", "held_out": val_nih, "split": "val"}]
        dropped = subprocess.run(
            script + ["--drop"], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert dropped.returncode == 0 and json.loads(dropped.stdout)["dropped"] == 1
    finally:
        config.unlink()
    assert set(rle.read_rle_csv(labels)) == {"ID_other"}
