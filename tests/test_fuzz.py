"""Fuzz the reader and the upload endpoint with mutated real files.

CI runs a seeded subset; run the full campaign on demand with
    PNEUMO_FUZZ_CASES=10000 .venv/bin/python -m pytest tests/test_fuzz.py -q -s
Every case must end in an image or a PneumoError (reader), and in a result or
a clean 4xx (endpoint): never another exception, a 500 or a memory blow-up.
"""

import io
import os
import resource
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from helpers.fuzz_cases import cases, mutate, seed_files
from pneumo.errors import PneumoError
from pneumo.io.imaging import read_image

CASES = int(os.environ.get("PNEUMO_FUZZ_CASES", "300"))
SEEDS = seed_files()
OUTCOMES: Counter = Counter()
MAX_PIXELS = 20_000_000


@settings(
    max_examples=CASES,
    deadline=None,
    derandomize=CASES <= 1000,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(cases(sorted(SEEDS)))
def test_reader_never_crashes(case):
    name, kind, a, b, blob = case
    data = mutate(SEEDS[name], name, kind, a, b, blob)
    try:
        rec = read_image(data, max_pixels=MAX_PIXELS)
        assert rec.pixels.dtype.name == "uint8" and rec.pixels.ndim == 2
        assert rec.pixels.size <= MAX_PIXELS
        OUTCOMES["image"] += 1
    except PneumoError as exc:
        assert str(exc)  # a message for the user
        OUTCOMES[type(exc).__name__] += 1


def test_reader_memory_stayed_bounded():
    """Peak RSS stays far below a blow-up on the cases most likely to cause one (huge
    declared sizes, deep nesting), run here so the test stands alone."""
    import random
    from helpers.fuzz_cases import KINDS, mutate

    rng = random.Random(2026)
    names = sorted(SEEDS)
    outcomes: Counter = Counter()
    for _ in range(60):
        name, kind = rng.choice(names), rng.choice(["dimensions", "header", "nested"] + KINDS)
        data = mutate(
            SEEDS[name],
            name,
            kind,
            rng.random(),
            rng.randrange(10_001),
            rng.randbytes(rng.randrange(1, 64)),
        )
        try:
            read_image(data, max_pixels=MAX_PIXELS)
            outcomes["image"] += 1
        except PneumoError:
            outcomes["refused"] += 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nmemory cases: {dict(outcomes)}; campaign so far: {dict(OUTCOMES)}; "
        f"peak RSS {peak_mb:.0f} MB"
    )
    assert sum(outcomes.values()) == 60 and outcomes["refused"] > 0
    assert peak_mb < 8000


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory, tiny_predictor):
    from app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "f",
            "PREDICTOR": tiny_predictor,
            "DATA_DIR": str(tmp_path_factory.mktemp("fuzzdata")),
            "MAX_IMAGE_PIXELS": MAX_PIXELS,
            "RATELIMIT_ENABLED": False,
        }
    )
    # a cookie-less API client, as curl: the fuzz target is the upload parser, not CSRF
    return app.test_client(use_cookies=False)


@pytest.mark.slow
@settings(
    max_examples=max(CASES // 10, 30),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(cases(sorted(SEEDS)))
def test_upload_endpoint_never_500(fuzz_client, case):
    name, kind, a, b, blob = case
    data = mutate(SEEDS[name], name, kind, a, b, blob)
    resp = fuzz_client.post(
        "/api/v1/predictions",
        data={"files": [(io.BytesIO(data), name)]},
        content_type="multipart/form-data",
    )
    assert resp.status_code in (201, 400, 413, 415, 422), resp.status_code
    body = resp.get_json()
    assert body["results"] or body["errors"][0]["message"]
