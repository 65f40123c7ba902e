"""Hardening II, log and privacy findings: forged log lines, UIDs in the log, cached result
files, data readable by other local users; against a real gunicorn where the log is its own."""
import os
import socket
import stat

import pytest

from conftest import ROOT


@pytest.mark.parametrize("path, logged", [
    ("/results/abc", "/results/abc"),
    ("/x\nforged 200", "/x\\x0aforged 200"),
    ("/x\x00y", "/x\\x00y"),
    ("/dicomweb/studies/1.2.840.113619.2.55.3/series/1.2.3.4.5", "/dicomweb/studies/{uid}/series/{uid}"),
    ("", "-"),
])
def test_loggable_path(path, logged):
    from app.accesslog import loggable_path
    assert loggable_path(path) == logged


def test_result_files_and_pages_are_never_cached(client, positive_dicom):
    from test_app import result_id_from, upload
    rid = result_id_from(upload(client, ("a.dcm", positive_dicom.read_bytes())))
    for url in (f"/results/{rid}", f"/results/{rid}/files/image.png",
                f"/results/{rid}/files/overlay.png", f"/api/v1/predictions/{rid}"):
        assert client.get(url).headers["Cache-Control"] == "no-store", url


@pytest.mark.slow
def test_real_gunicorn_log_has_no_forged_lines_or_uids_and_data_is_private(
        tmp_path, tiny_model_folder, positive_dicom):
    from localserver import LocalServer, multipart_file
    import urllib.request
    log = tmp_path / "gunicorn.log"
    server = LocalServer(tiny_model_folder, tmp_path / "instance", log_path=log)
    try:
        host, port = "127.0.0.1", server.port
        for raw in (b"GET /x%0aFORGED-LINE%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    b"GET /dicomweb/studies/1.2.840.99999.7.7.7/series HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n"):
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(raw)
                s.recv(4096)
        body, ctype = multipart_file(positive_dicom.read_bytes(), "a.dcm")
        req = urllib.request.Request(server.url + "/api/v1/predictions", data=body,
                                     headers={"Content-Type": ctype}, method="POST")
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert resp.status == 201
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert not any(line.startswith("FORGED-LINE") for line in text.splitlines())
    assert "\x00" not in text and "\\x0aFORGED-LINE\\x00" in text
    assert "1.2.840.99999.7.7.7" not in text and "/dicomweb/studies/{uid}/series" in text
    data = tmp_path / "instance" / "data"
    paths = [data] + list(data.rglob("*"))
    assert any(p.name == "source.dcm" for p in paths)
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, (p, oct(mode))


@pytest.mark.parametrize("target, expected", [
    ("/worklist", "/worklist"), ("/results/abc?x=1", "/results/abc?x=1"),
    ("//evil.example/x", "/"), ("/\t/evil.example/x", "/"), ("/\\evil.example", "/"),
    ("/\n/x", "/"), ("https://evil.example/", "/"), ("", "/"), ("worklist", "/"),
])
def test_login_goes_back_only_to_a_path_of_this_site(target, expected):
    from app.access import safe_next
    assert safe_next(target) == expected


def _http(port, method, path, cookie=None, body=None):
    """One request to a real server, no redirects followed: (status, headers, text)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read().decode(errors="replace")
    conn.close()
    return out


def _cookie(headers, old=None):
    import re
    found = re.search(r"(session=[^;]*)", headers.get("Set-Cookie", ""))
    return found.group(1) if found else old


@pytest.mark.slow
def test_real_gunicorn_sessions_end_at_logout_and_never_carry_over(tmp_path,
                                                                   tiny_model_folder):
    """Hardening II item 6 against gunicorn: a saved cookie is dead after logout; logging
    in gives a new session and CSRF token (no fixation); ``next`` never leaves the site and
    a newline in it is no 500."""
    import re
    import urllib.parse
    from localserver import LocalServer
    server = LocalServer(tiny_model_folder, tmp_path / "instance",
                         env={"PNEUMO_ACCESS_PASSWORD": "shared-password-1"})
    try:
        port = server.port
        status, headers, page = _http(port, "GET", "/login")
        before = _cookie(headers)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

        def login(next_path, cookie, csrf):
            body = urllib.parse.urlencode({"password": "shared-password-1", "csrf_token": csrf})
            return _http(port, "POST", "/login?next=" + urllib.parse.quote(next_path, safe=""),
                         cookie, body)
        status, headers, _ = login("/\t/evil.example/x", before, token)
        assert status == 303 and headers["Location"] == "/"
        after = _cookie(headers)
        assert after and after != before
        # the pre-login session and its CSRF token are gone: the old token is refused now
        status, headers, page = _http(port, "GET", "/", after)
        after = _cookie(headers, after)  # the session now holds its CSRF token
        assert status == 200
        new_token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert new_token != token
        kept = after  # a copy of the logged-in cookie (another tab, a stolen cookie)
        status, headers, _ = _http(port, "POST", "/logout", after,
                                   urllib.parse.urlencode({"csrf_token": new_token}))
        assert status == 303
        status, headers, _ = _http(port, "GET", "/worklist", kept)
        assert status == 302 and "/login" in headers["Location"]
        status, _, _ = _http(port, "GET", "/api/v1/predictions", kept)
        assert status == 401
        # a newline in next: a redirect home, not a 500
        status, headers, page = _http(port, "GET", "/login")
        fresh = _cookie(headers)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, headers, _ = login("/\n/x", fresh, token)
        assert status == 303 and headers["Location"] == "/"
    finally:
        server.stop()
