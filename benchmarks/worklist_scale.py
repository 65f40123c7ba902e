"""The worklist and the API with 10,000 stored results (issue 35): server time of the
first page, of pages further on, of filtered pages and of a search, on SQLite and on
PostgreSQL.

    python benchmarks/worklist_scale.py [N] [--engines sqlite,postgresql]

One real SIIM film is analysed (an untrained tiny model, seeded) for a logged-in
radiologist of a team; the store then holds N - 1 copies of its row, with SIIM-style file
names, patient names, verdicts, reviews on every tenth and three uploaders. Times are the
app's own (Flask's test client: the request through every hook, template and query, no
network), the median and the slowest of several requests each. Targets: first page
<= 200 ms, any page <= 300 ms. Prints JSON per engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SIIM, write_untrained_model  # noqa: E402

PASSWORD = "a-long-password-1"


def _fill(store, template, n: int, owners: list[str]) -> None:
    """``n`` more rows like ``template`` in one transaction."""
    from app.store.records import FIELDS, Review, new_id, search_text
    from app.store.rows import to_sql

    rng = random.Random(0)
    sql = (
        f"INSERT INTO results ({', '.join(f.name for f in FIELDS)}) "
        f"VALUES ({', '.join(':' + f.name for f in FIELDS)})"
    )
    reviews = []
    with store.db._connect() as db:
        for i in range(n):
            name = f"1.2.276.0.7230010.3.1.4.8323329.{i}.1517875165.{878027 + i}.dcm"
            ids = {"patient_name": f"Patient^{i:05d}", "accession_number": f"ACC{i:06d}"}
            p = rng.random()
            row = dataclasses.replace(
                template,
                id=new_id(),
                owner=owners[i % len(owners)],
                created=template.created - 20_000 + i,
                probability=p,
                positive=p >= template.threshold,
                file_name=name,
                identifiers=ids,
                search_text=search_text(name, ids),
            )
            db.execute(sql, to_sql(row))
            if i % 10 == 0:
                reviews.append(
                    Review(
                        row.id,
                        owners[0],
                        "rad",
                        row.created + 5,
                        i % 20 == 0,
                        None if i % 20 == 0 else "missed",
                        None,
                    )
                )
    for review in reviews:
        store.reviews.add(review)


def _time(client, method: str, url: str, repeat: int = 5, **kw) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = getattr(client, method)(url, **kw)
        times.append(time.perf_counter() - t0)
        assert resp.status_code == 200, (url, resp.status_code)
    return {
        "median_ms": round(1000 * statistics.median(times), 1),
        "max_ms": round(1000 * max(times), 1),
    }


def run(engine: str, n: int, tmp: Path, database_url: str | None) -> dict:
    from app import create_app
    from app.service import Item
    from helpers.web import csrf, post
    from pneumo.inference.predictor import Predictor

    arch = {
        "name": "double_unet",
        "args": {"input_size": 64, "depth": 2, "width": 0.125, "channels": 1},
    }
    folder = write_untrained_model(tmp / f"tiny-{engine}", arch, {"size": 64, "channels": 1})
    config = {
        "TESTING": True,
        "SECRET_KEY": "bench-key-0123456789",
        "DATA_DIR": str(tmp / f"data-{engine}"),
        "PREDICTOR": Predictor.load(folder),
    }
    if database_url:
        config["DATABASE_URL"] = database_url
    app = create_app(config)
    store = app.extensions["pneumo"].store
    uids = [
        store.accounts.create(name, PASSWORD, "A", "radiologist") for name in ("rad", "r2", "r3")
    ]
    owners = [f"user:{u}" for u in uids]
    film = sorted(SIIM.rglob("*.dcm"))[0]
    outcome = app.extensions["pneumo"].analyser.analyse_many(
        [Item(film.name, film.read_bytes())], owners[0]
    )
    template = outcome.results[0][1]
    t0 = time.perf_counter()
    _fill(store, template, n - 1, owners)
    fill_s = time.perf_counter() - t0
    client = app.test_client()
    assert post(client, "/login", username="rad", password=PASSWORD).status_code == 303
    client.get("/worklist")  # warm: templates compiled, connections open
    out = {"engine": engine, "results": n, "fill_s": round(fill_s, 1)}
    out["first_page"] = _time(client, "get", "/worklist")
    # pages further on: follow the next links 20 pages deep, time each
    url, deep = "/worklist", []
    for _ in range(20):
        page = client.get(url).get_data(as_text=True)
        start = page.find('id="next-page" rel="next" href="')
        if start < 0:
            break
        url = (
            page[start + len('id="next-page" rel="next" href="') :]
            .split('"', 1)[0]
            .replace("&amp;", "&")
        )
        deep.append(_time(client, "get", url, repeat=1)["max_ms"])
    out["later_pages"] = {
        "pages": len(deep),
        "median_ms": statistics.median(deep),
        "max_ms": max(deep),
    }
    out["by_probability"] = _time(client, "get", "/worklist?sort=probability")
    out["unreviewed"] = _time(client, "get", "/worklist?status=unreviewed")
    out["disagreed"] = _time(client, "get", "/worklist?status=disagreed")
    out["suspected"] = _time(client, "get", "/worklist?verdict=positive&sort=probability")
    out["one_uploader"] = _time(client, "get", "/worklist?uploader=r2")
    token = csrf(client)
    out["search_patient"] = _time(
        client, "post", "/worklist", data={"q": "patient 0999", "csrf_token": token}
    )
    out["api_first_200"] = _time(client, "get", "/api/v1/predictions?limit=200")
    out["api_search"] = _time(
        client,
        "post",
        "/api/v1/predictions/search",
        json={"q": "acc0012"},
        headers={"X-CSRF-Token": token},
    )
    store.close()
    slowest = max(v["max_ms"] for v in out.values() if isinstance(v, dict))
    out["targets"] = {
        "first_page_le_200ms": out["first_page"]["max_ms"] <= 200,
        "any_page_le_300ms": slowest <= 300,
        "slowest_ms": slowest,
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            server = None
            url = None
            if engine == "postgresql":
                from helpers import pgserver

                server = pgserver.PostgresServer().start()
                url = server.new_database()
            try:
                print(json.dumps(run(engine, args.n, Path(tmp), url)), flush=True)
            finally:
                if server is not None:
                    server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
