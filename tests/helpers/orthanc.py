"""A real Orthanc PACS for the tests (Debian's orthanc + orthanc-dicomweb): one process on
free loopback ports with a temporary storage folder, basic auth and the DICOMweb plugin,
stopped by PID."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from helpers.localserver import free_port, stop_process

ORTHANC_USER, ORTHANC_PASSWORD = "pneumo-test", "orthanc-secret-1"
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)
NOT_INSTALLED = (
    "Orthanc with its DICOMweb plugin is not installed (Debian packages orthanc "
    "and orthanc-dicomweb; scripts/setup.sh installs them when run as root)"
)


def _orthanc_binary() -> tuple[str, str] | None:
    exe = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None
    )
    plugins = [p for pattern in PLUGIN_CANDIDATES for p in sorted(glob.glob(pattern))]
    return (exe, plugins[0]) if exe and plugins else None


class Orthanc:
    """One Orthanc process on loopback; stopped by PID."""

    def __init__(
        self,
        folder: Path,
        servers: dict | None = None,
        http_port: int | None = None,
        dicom_port: int | None = None,
    ):
        found = _orthanc_binary()
        if found is None:
            pytest.skip(NOT_INSTALLED)
        self.exe, self.plugin = found
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.auth = (ORTHANC_USER, ORTHANC_PASSWORD)
        self.servers = servers or {}
        self.proc = None
        self.start()

    def config(self) -> dict:
        return {
            "Name": "pneumo-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "PNEUMOTEST",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {ORTHANC_USER: ORTHANC_PASSWORD},
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "Plugins": [self.plugin],
            "StorageCompression": False,
            "HttpTimeout": 120,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": self.servers},
        }

    def start(self) -> None:
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        self.log = open(self.folder / "orthanc.log", "a")
        self.proc = subprocess.Popen(
            [self.exe, str(cfg)], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.url + "/system", auth=self.auth, timeout=2).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            "Orthanc did not start:\n" + (self.folder / "orthanc.log").read_text()[-3000:]
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    # -- REST helpers ------------------------------------------------------------
    def get(self, path: str, **kw):
        r = requests.get(self.url + path, auth=self.auth, timeout=60, **kw)
        r.raise_for_status()
        return r.json()

    def upload(self, data: bytes) -> dict:
        r = requests.post(self.url + "/instances", data=data, auth=self.auth, timeout=60)
        r.raise_for_status()
        return r.json()

    def stow_to(self, server: str, resources: list[str]) -> requests.Response:
        return requests.post(
            f"{self.url}/dicom-web/servers/{server}/stow",
            auth=self.auth,
            json={"Resources": resources, "Synchronous": True},
            timeout=180,
        )

    def instance_file(self, sop_uid: str) -> bytes:
        found = requests.post(
            self.url + "/tools/lookup", data=sop_uid, auth=self.auth, timeout=30
        ).json()
        r = requests.get(f"{self.url}/instances/{found[0]['ID']}/file", auth=self.auth, timeout=60)
        r.raise_for_status()
        return r.content

    def segs_in_study(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the SEG instances of a study."""
        r = requests.get(
            f"{self.dicomweb_url}/studies/{study_uid}/instances",
            auth=self.auth,
            params={"Modality": "SEG"},
            timeout=60,
        )
        r.raise_for_status()
        return r.json() if r.content else []
