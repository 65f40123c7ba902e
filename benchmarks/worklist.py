"""The worklist's first view with N stored results (issues 35, 36): server time for the
page and for every thumbnail it shows, as a browser would fetch them.

    python benchmarks/worklist.py [N]      # default 200

An untrained tiny model (seeded) reads N real SIIM films through the analysis service
(what an upload does), then one browser session opens ``/worklist`` and each thumbnail
on it, first view and second view. Prints JSON: rows shown, the page's time, the
thumbnails' total and the whole first view.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SIIM, write_untrained_model  # noqa: E402


def _view(client) -> dict:
    t0 = time.perf_counter()
    page = client.get("/worklist").data.decode()
    t1 = time.perf_counter()
    thumbs = re.findall(r'src="(/results/[^"]+/files/thumb\.jpg)"', page)
    for url in thumbs:
        assert client.get(url).status_code == 200
    t2 = time.perf_counter()
    return {
        "rows": len(thumbs),
        "page_s": round(t1 - t0, 3),
        "thumbs_s": round(t2 - t1, 3),
        "first_view_s": round(t2 - t0, 3),
    }


def main(n: int) -> int:
    from app import create_app
    from app.service import Item
    from pneumo.inference.predictor import Predictor

    films = sorted(SIIM.rglob("*.dcm"))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        arch = {
            "name": "double_unet",
            "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
        }
        folder = write_untrained_model(Path(tmp) / "tiny", arch, {"size": 64, "channels": 1})
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "bench-key-0123456789",
                "DATA_DIR": str(Path(tmp) / "data"),
                "MAX_FILES": 1000,
                "PREDICTOR": Predictor.load(folder),
            }
        )
        client = app.test_client()
        client.get("/worklist")  # the session's owner key
        with client.session_transaction() as s:
            owner = s["owner"]
        analyser = app.extensions["pneumo"].analyser
        t0 = time.perf_counter()
        for path in films:
            data = path.read_bytes()
            analyser.analyse_many([Item(path.name, data)], owner)
        stored_s = time.perf_counter() - t0
        first, second = _view(client), _view(client)
    print(
        json.dumps(
            {
                "results": len(films),
                "store_each_s": round(stored_s / len(films), 4),
                "first_view": first,
                "second_view": second,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
