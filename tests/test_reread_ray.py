"""Prediction engines (issue 22 item 5): the ray engine gives the single-process numbers.

The bundled model's test runs a local Ray started here (num_cpus=2) on validation films of
every format in the committed split; the CLI test lets ``pneumo predict --engine ray``
start and stop its own Ray. The rest (windowing, actor plans, argument checks, the CSV)
needs no Ray.
"""

import csv
import logging
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from conftest import ROOT, SIIM

sys.path.insert(0, str(ROOT / "benchmarks"))


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- without Ray


def test_in_order_yields_in_input_order_with_a_bounded_window():
    from pneumo.evaluation.ray_engine import in_order

    drawn, outstanding, peak = [], set(), [0]

    def chunks():
        for i in range(10):
            drawn.append(i)
            yield [i]

    def submit(index, chunk):
        outstanding.add(index)
        peak[0] = max(peak[0], len(outstanding))
        return index

    def fetch(handle):
        outstanding.discard(handle)
        return [f"read {handle}"]

    results = in_order(chunks(), submit, fetch, window=3)
    assert next(results) == ["read 0"] and drawn == [0, 1, 2]  # nothing drawn ahead
    assert list(results) == [[f"read {i}"] for i in range(1, 10)]
    assert peak[0] == 3 and not outstanding


@pytest.mark.parametrize(
    "nodes, cores, expected",
    [
        # (count, num_cpus, num_gpus, threads)
        ([{"Alive": True, "Resources": {"CPU": 2.0}}], 2, (1, 2, 0, 2)),
        ([{"Alive": True, "Resources": {"CPU": 16.0}}], 4, (4, 4, 0, 4)),
        (
            [
                {"Alive": True, "Resources": {"CPU": 3.0}},
                {"Alive": True, "Resources": {"CPU": 3.0}},
            ],
            2,
            (2, 2, 0, 2),
        ),  # per node: 3 // 2 = 1 each
        ([{"Alive": True, "Resources": {"CPU": 2.0}}], 8, (1, 2, 0, 2)),  # capped to a node
        (
            [
                {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
                {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
            ],
            2,
            (3, 1, 1, None),
        ),
        (
            [
                {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
                {"Alive": True, "Resources": {"CPU": 4.0}},
            ],
            2,
            (2, 2, 0, 2),
        ),  # dead nodes ignored
    ],
)
def test_actor_plans(nodes, cores, expected):
    from pneumo.evaluation.ray_engine import ActorPlan, plan_actors

    assert plan_actors(nodes, cores) == ActorPlan(*expected)


def test_actor_plan_without_a_usable_node():
    from pneumo.errors import ModelLoadError
    from pneumo.evaluation.ray_engine import plan_actors

    with pytest.raises(ModelLoadError, match="no live node"):
        plan_actors([{"Alive": False, "Resources": {"CPU": 8.0}}], 2)


def test_reread_checks_its_arguments_at_the_call(tiny_predictor):
    from pneumo.evaluation.engines import reread

    for kwargs, message in (
        (dict(engine="spark"), "engine must be one of local, ray"),
        (dict(batch_size=0), "batch_size must be"),
        (dict(cores_per_actor=True), "cores_per_actor must be"),
        (dict(address="auto"), "needs engine='ray'"),
    ):
        with pytest.raises(ValueError, match=message):
            reread(None, [], **kwargs)
    with pytest.raises(ValueError, match="not a loaded Predictor"):
        reread(tiny_predictor, [], engine="ray")


def test_local_engine_gives_a_row_per_item_in_order(tiny_predictor, positive_dicom, tmp_path):
    """Unreadable bytes and a file that could not be fetched are rows, between verdicts."""
    from pydicom.data import get_testdata_file
    from pneumo.errors import UnsupportedImageError
    from pneumo.evaluation.batch import READ_COLUMNS, write_reads
    from pneumo.evaluation.engines import reread

    film = positive_dicom.read_bytes()
    items = [
        ("a", film),
        ("broken", b"\x89PNG\r\n\x1a\n" + b"\0" * 20),
        ("gone", UnsupportedImageError("No such file: gone.dcm")),
        ("mr", Path(get_testdata_file("MR_small.dcm")).read_bytes()),
        ("b", film),
    ]
    reads = list(reread(tiny_predictor, items, batch_size=2))
    assert [r.key for r in reads] == ["a", "broken", "gone", "mr", "b"]
    a, broken, gone, mr, b = reads
    assert a.ok and a.to_dict() == dict(b.to_dict(), key="a")  # the same film, the same read
    assert a.model == "tiny_untrained" and a.model_version == "test"
    assert a.source_format == "DICOM" and a.image_id and (a.rows, a.columns) == (1024, 1024)
    assert (broken.error_code, broken.refused_by, broken.probability) == (
        "corrupt_image",
        "reader",
        None,
    )
    assert gone.error == "No such file: gone.dcm" and gone.refused_by == "reader"
    assert (mr.error_code, mr.refused_by) == ("not_chest_xray", "header")

    out = tmp_path / "reads.csv"
    assert write_reads(reads, out) == {
        "images": 2,
        "positive": int(a.positive) * 2,
        "failed": 2,
        "not_chest": 1,
    }
    write_reads(reads[:1], out, append=True)
    rows = read_rows(out)
    assert tuple(rows[0]) == READ_COLUMNS and len(rows) == 6
    assert rows[0]["model"] == "tiny_untrained" and rows[0]["probability"] == repr(a.probability)
    assert rows[1]["error_code"] == "corrupt_image" and rows[1]["probability"] == ""
    (tmp_path / "other.csv").write_text("ImageId,EncodedPixels\n")
    with pytest.raises(ValueError, match="other columns"):
        write_reads(reads, tmp_path / "other.csv", append=True)


def test_reread_command_reads_folders_and_lists(
    tmp_path, tiny_model_folder, positive_dicom, capsys
):
    import json
    import shutil
    from pneumo.cli import main

    (tmp_path / "films").mkdir()
    shutil.copy(positive_dicom, tmp_path / "films" / "chest.dcm")
    shutil.copy(positive_dicom, tmp_path / "other.dcm")
    (tmp_path / "list.txt").write_text("# a list of files\nother.dcm\n\ngone.dcm\n")
    args = [
        "reread",
        str(tmp_path / "films"),
        "--list",
        str(tmp_path / "list.txt"),
        "--model",
        str(tiny_model_folder),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "reads.csv"),
    ]
    assert main(args) == 1  # a listed file is missing: its row says so
    assert json.loads(capsys.readouterr().out) == {
        "images": 2,
        "positive": mock.ANY,
        "failed": 1,
        "not_chest": 0,
    }
    assert main(args + ["--append", "--keep-going"]) == 0
    rows = read_rows(tmp_path / "reads.csv")
    assert [Path(r["key"]).name for r in rows] == ["chest.dcm", "gone.dcm", "other.dcm"] * 2
    assert {r["model"] + " " + r["model_version"] for r in rows} == {"tiny_untrained test"}
    assert rows[1]["error"] == "No such file: gone.dcm" and rows[1]["probability"] == ""
    assert main(args + ["--address", "auto"]) == 2
    assert "--address needs --engine ray" in capsys.readouterr().err


# ---------------------------------------------------------------- through Ray


@pytest.mark.slow
def test_predict_with_the_ray_engine_writes_the_local_engine_files(tmp_path, tiny_model_folder):
    """`pneumo predict --engine ray` (its own local Ray, started and stopped) writes the
    same submission and scores, byte for byte, as the default single-process run."""
    pytest.importorskip("ray")
    from pneumo.cli import main

    folder = SIIM / "kaggle_sample_OleguerCanal"
    common = [str(folder), "--model", str(tiny_model_folder), "--device", "cpu"]
    assert (
        main(
            [
                "predict",
                *common,
                "--submission",
                str(tmp_path / "local.csv"),
                "--scores",
                str(tmp_path / "local_scores.csv"),
            ]
        )
        == 0
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo.cli",
            "predict",
            *common,
            "--engine",
            "ray",
            "--submission",
            str(tmp_path / "ray.csv"),
            "--scores",
            str(tmp_path / "ray_scores.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"model on \d+ Ray actors?: CPU", res.stderr), res.stderr[-3000:]
    assert len(read_rows(tmp_path / "ray.csv")) == 7
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (tmp_path / "ray_scores.csv").read_bytes() == (
        tmp_path / "local_scores.csv"
    ).read_bytes()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")  # the 'ray' extra (requirements-dev.txt)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()


def validation_items(per_class: int = 2) -> list[tuple[str, bytes]]:
    """Validation films of the committed split: per format, up to ``per_class`` positive
    and negative, read as bytes: 12 films (4 DICOM, 4 SIIM PNG, 2 JPEG: the split has
    positive JPEGs only, 2 NIH PNG negatives)."""
    from encoding_invariance import split_samples

    samples, _ = split_samples(ROOT / "configs" / "data_siim_v2.json", "val", None)
    chosen = []
    for fmt in ("DICOM", "PNG", "JPEG"):
        for label in (True, False):
            for source in ("siim", "nih"):
                chosen += [
                    s for s in samples if (s.format, s.positive, s.source) == (fmt, label, source)
                ][:per_class]
    return [(s.image_id, Path(s.path).read_bytes()) for s in chosen]


@pytest.mark.slow
@pytest.mark.bundled
def test_ray_engine_gives_the_single_process_numbers(local_ray):
    from pneumo.evaluation.engines import reread

    items = validation_items()
    items.insert(5, ("broken", b"\xff\xd8\xff\xe0" + b"\0" * 40))
    assert len(items) == 13 and sum(k.startswith("1.2.276") for k, _ in items) == 10
    local = list(reread(_cpu(), items, engine="local"))
    where = []
    on_ray = list(reread(_cpu(), items, engine="ray", on_ready=where.append))
    assert len(where) == 1 and where[0].startswith("1 Ray actor: CPU (")  # 2 cores, 2 each
    assert local_ray.is_initialized()  # the caller's Ray is left running
    assert [r.key for r in on_ray] == [k for k, _ in items]
    assert [r.key for r in local] == [k for k, _ in items]
    for a, b in zip(local, on_ray):
        if a.key == "broken":
            assert not a.ok and not b.ok and a.error == b.error
            assert b.error_code == "corrupt_image"
            continue
        assert a.ok and b.ok, (a.error, b.error)
        assert b.probability == pytest.approx(a.probability, abs=1e-6)
        assert (b.positive, b.rle, b.area_px, b.threshold, b.operating_point) == (
            a.positive,
            a.rle,
            a.area_px,
            a.threshold,
            a.operating_point,
        )
        assert (b.model, b.model_version) == (a.model, a.model_version) != ("", "")
    assert any(r.positive for r in local) and not all(r.positive for r in local if r.ok)


def _cpu():
    from pneumo.inference.loading import ModelOptions

    return ModelOptions(device="cpu")
