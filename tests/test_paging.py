"""The worklist and ``GET /api/v1/predictions`` page through every result: a total, a
``next`` link, keyset cursors (issue 35). Every result is reachable exactly once while new
ones arrive, on SQLite here and on PostgreSQL in the slow tier."""

import dataclasses
import random
import re

import pytest

from helpers.web import result_id_from, upload


def _fill(store, template, n: int, start: float, seed: int = 0) -> list[str]:
    """``n`` more rows like ``template`` (one transaction), one second apart from
    ``start``, random probabilities with ties (so the order needs its id to break them)."""
    from app.store.records import FIELDS, new_id
    from app.store.rows import to_sql

    rng = random.Random(seed)
    ids = []
    sql = (
        f"INSERT INTO results ({', '.join(f.name for f in FIELDS)}) "
        f"VALUES ({', '.join(':' + f.name for f in FIELDS)})"
    )
    with store.db._connect() as db:
        for i in range(n):
            row = dataclasses.replace(
                template,
                id=new_id(),
                created=start + i // 3,  # three rows share each second: ties on created too
                probability=rng.choice([0.1, 0.25, 0.5, 0.75, 0.9]),
            )
            db.execute(sql, to_sql(row))
            ids.append(row.id)
    return ids


def _walk(client, url: str, between=None) -> tuple[list[str], list[int]]:
    """Every id of every page from ``url`` on, following ``next``; ``between`` runs after
    each page (new uploads arriving)."""
    ids, totals = [], []
    while url:
        body = client.get(url).get_json()
        ids += [r["id"] for r in body["results"]]
        totals.append(body["total"])
        url = body["next"]
        if between:
            between()
    return ids, totals


@pytest.fixture()
def filled(app, client, positive_dicom):
    """An app whose one browser session owns 10,000 results (one real upload, the rest
    its copies in the database)."""
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    store = app.extensions["pneumo"].store
    template = store.results.get_any(rid)
    ids = _fill(store, template, 9_999, template.created - 20_000)
    return store, template, {rid, *ids}


@pytest.mark.parametrize("sort", ["newest", "probability"])
def test_every_result_is_on_exactly_one_page_while_new_ones_arrive(client, filled, sort):
    store, template, ids = filled
    arriving = []

    def more():
        arriving.extend(_fill(store, template, 3, template.created + 100 + len(arriving), 7))

    seen, totals = _walk(client, f"/api/v1/predictions?sort={sort}&limit=1000", more)
    assert len(seen) == len(set(seen))  # nobody twice
    assert ids <= set(seen)  # everybody who was there when the walk began
    assert set(seen) <= ids | set(arriving)
    assert totals[0] == 10_000 and totals[-1] == 10_000 + len(arriving) - 3
    if sort == "newest":  # the newcomers sort before the first page: none is seen
        assert set(seen) == ids
    rows = [store.results.get_any(i) for i in seen[:2000]]
    key = (
        (lambda r: (r.created, r.id))
        if sort == "newest"
        else (lambda r: (r.probability, r.created, r.id))
    )
    assert [key(r) for r in rows] == sorted((key(r) for r in rows), reverse=True)


def test_the_default_page_the_limits_and_a_bad_cursor(client, filled):
    first = client.get("/api/v1/predictions").get_json()
    assert len(first["results"]) == 200 and first["total"] == 10_000
    assert first["next"].startswith("/api/v1/predictions?") and "cursor=" in first["next"]
    second = client.get(first["next"]).get_json()
    assert not {r["id"] for r in first["results"]} & {r["id"] for r in second["results"]}
    for bad in ("limit=0", "limit=1001", "limit=ten", "cursor=bm9wZQ", "cursor=%%%"):
        resp = client.get(f"/api/v1/predictions?{bad}")
        assert resp.status_code == 400, bad
        assert resp.get_json()["error"]["message"]
    # a cursor of one order is refused by the other (it would start in the wrong place)
    cursor = re.search(r"cursor=([^&]+)", first["next"]).group(1)
    assert client.get(f"/api/v1/predictions?sort=probability&cursor={cursor}").status_code == 400
    last = client.get("/api/v1/predictions?limit=1000&cursor=" + cursor).get_json()
    assert last["total"] == 10_000 and len(last["results"]) == 1000


def test_the_worklist_pages_with_a_count_and_a_next_link(client, filled):
    store, _, ids = filled
    page = client.get("/worklist").data.decode()
    assert "50 shown of 10000 studies" in page
    shown = set(re.findall(r'href="/results/([A-Za-z0-9_-]{16,})"', page))
    assert len(shown) == 50
    following = re.search(r'id="next-page" rel="next" href="([^"]+)"', page).group(1)
    second = client.get(following.replace("&amp;", "&")).data.decode()
    assert "first page" in second
    assert not shown & set(re.findall(r'href="/results/([A-Za-z0-9_-]{16,})"', second))
    # a tampered cursor starts again from the first page rather than failing
    resp = client.get("/worklist?cursor=garbage")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/worklist?sort=newest")


@pytest.mark.slow  # a real PostgreSQL
def test_keyset_pages_on_postgresql(postgres, tmp_path, positive_dicom):
    from app.store.records import ResultRow
    from app.store.repository import Store

    store = Store(tmp_path / "d", postgres.new_database())
    store.init()
    template = ResultRow(
        id="x" * 22,
        owner="session:abc",
        created=1.0e9,
        source_format="PNG",
        positive=False,
        probability=0.5,
        threshold=0.8,
        area_px=0,
        area_cm2=None,
        side={},
        meta={},
        identifiers={},
        model="m",
        rle="",
        timings={},
    )
    ids = set(_fill(store, template, 2_500, 1.0e9))
    for sort in ("newest", "probability"):
        seen, cursor = [], None
        while True:
            page = store.results.page("session:abc", sort, 300, cursor)
            seen += [r.id for r in page.rows]
            assert page.total == 2_500
            if page.next is None:
                break
            cursor = page.next
        assert len(seen) == 2_500 and set(seen) == ids
