"""What the web tests share: a session's CSRF token, uploads and form posts through the
test client, the result id of an upload's redirect, an app with two teams' accounts."""

from __future__ import annotations

import io
import re


def csrf(client) -> str:
    client.get("/login")  # an open page: makes sure the session has a token
    with client.session_transaction() as s:
        if "csrf" not in s:
            s["csrf"] = "test-token"
        return s["csrf"]


def upload(client, *files, url="/upload"):
    """POST files as multipart/form-data, encoded here in memory: the test client's own
    encoder spools bodies over 500 kB to a temporary file that it never closes."""
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    fields = MultiDict(
        [
            (
                "files",
                FileStorage(
                    io.BytesIO(content), filename=name, content_type="application/octet-stream"
                ),
            )
            for name, content in files
        ]
    )
    fields.add("csrf_token", csrf(client))
    boundary, body = encode_multipart(fields)
    return client.post(url, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def post(client, url, **form):
    return client.post(url, data=dict(form, csrf_token=csrf(client)))


def result_id_from(resp):
    m = re.search(r"/results/([A-Za-z0-9_-]{16,})", resp.headers.get("Location", ""))
    assert m, resp.headers
    return m.group(1)


def user_app(tmp_path, tiny_predictor, **extra):
    """An app with two accounts in two teams (alice, bob) and alice's API token."""
    from app import create_app
    from app.store.repository import Store

    store = Store(tmp_path / "d")
    store.init()
    store.accounts.create("alice", "correct horse 1")
    store.accounts.create("bob", "correct horse 2", team="another team")  # isolation across teams
    token = store.accounts.create_token("alice")
    app = create_app(
        dict(
            {
                "TESTING": True,
                "SECRET_KEY": "k",
                "DATA_DIR": str(tmp_path / "d"),
                "PREDICTOR": tiny_predictor,
            },
            **extra,
        )
    )
    return app, token
