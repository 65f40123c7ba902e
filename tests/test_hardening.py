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
