"""Concurrent uploads and a killed worker, against gunicorn on loopback (small scale in CI).

Full scale on demand: .venv/bin/python scripts/loadtest.py --uploads 100 [--kill]
"""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import loadtest  # noqa: E402


@pytest.mark.slow
def test_concurrent_uploads_each_get_their_own_result(tiny_model_folder):
    report = loadtest.run(uploads=12, workers=2, model_dir=tiny_model_folder, kill=False)
    assert report["answered"] == 12 and report["client_errors"] == 0
    assert report["verified_own_image"] == 12 and report["crossed"] == 0
    assert report["stored_results"] == 12 and report["incomplete_visible_results"] == 0


@pytest.mark.slow
def test_killed_worker_loses_only_its_requests(tiny_model_folder):
    report = loadtest.run(uploads=12, workers=2, model_dir=tiny_model_folder, kill=True)
    assert report["killed_worker"] is not None
    assert report["crossed"] == 0 and report["incomplete_visible_results"] == 0
    assert report["answered"] + report["client_errors"] == 12
    assert report["verified_own_image"] == report["answered"]
    assert report["stored_results"] >= report["answered"]
    # the killed worker held only the connections it was working on: at most its threads
    assert report["client_errors"] <= report["threads_per_worker"]
