#!/usr/bin/env python3
"""The serving check behind ``scripts/device_check.sh`` (issue 16): for each Keras
backend, gunicorn with the bundled model, real SIIM DICOMs uploaded through the
API, ``pneumo predict``'s speed, GPU memory and equality with CPU outputs.

    python scripts/device/check.py --backends "jax torch" --device auto \\
        --data DICOM_FOLDER --reference PREFIX --out FOLDER [--rounds 2] [--budget-s 270]

This process never imports Keras: each backend runs in its own processes (the
gunicorn server, ``predict_run.py``, the ``pneumo.cli predict`` command), with
``KERAS_BACKEND`` set, so one run checks several backends. Per backend it records:

* where the model went: ``/readyz`` (device and backend) and where the weights are;
* cold start (gunicorn start -> ``/readyz`` 200), then latency per upload (one
  DICOM per ``POST /api/v1/predictions``, each file ``--rounds`` times): p50, p95;
* ``pneumo predict`` images/s at batch 1 and 16 (``predict_files``, model loaded,
  after a warm-up pass) and the real command once, start-up included;
* peak GPU memory: nvidia-smi's largest reading for the server's worker and the
  predict process, and the backend allocator's own peak;
* the largest difference from the CPU reference (``PREFIX.json``/``.npz``, the
  same files under TensorFlow on a CPU, made by ``scripts/device/prepare.sh``;
  computed here on this machine's CPU when missing or for other weights) of the
  full-precision probabilities and maps, the API's and the command's (4 digits):
  all must be within 1e-3.

Writes ``FOLDER/device_check.json`` after each backend (a run cut short still
leaves a report) and the server and predict logs beside it. Exit status 0 when
every check passed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.cookiejar
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the gunicorn harness lives with the tests
PREDICT_RUN = ROOT / "scripts" / "device" / "predict_run.py"
TOLERANCE = 1e-3
PACKAGES = (
    "keras",
    "jax",
    "jaxlib",
    "torch",
    "tensorflow",
    "numpy",
    "flask",
    "gunicorn",
    "pydicom",
    "pylibjpeg-libjpeg",
    "highdicom",
)


def run_text(cmd: list[str]) -> str | None:
    """A command's stdout, or ``None`` when it is missing or fails."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _version(name: str) -> str | None:
    """The installed version of a distribution, or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def host_info() -> dict:
    versions = {name: _version(name) for name in PACKAGES}
    return {
        "gpus": run_text(
            [
                "nvidia-smi",
                "--query-gpu=index,name,driver_version,memory.total",
                "--format=csv,noheader",
            ]
        ),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "packages": versions,
    }


class GpuMemory(threading.Thread):
    """Samples nvidia-smi every 0.25 s: the largest memory use of the watched
    processes and of the whole GPU. Does nothing where there is no nvidia-smi."""

    def __init__(self):
        super().__init__(daemon=True)
        self.available = shutil.which("nvidia-smi") is not None
        self.pids: set[int] = set()
        self.process_mib = 0.0
        self.gpu_used_mib = 0.0
        self.baseline_mib = self._gpu_used() if self.available else None
        self._stop_event = threading.Event()

    def _gpu_used(self) -> float:
        out = run_text(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        return float(out.splitlines()[0]) if out else 0.0

    def _sample(self) -> None:
        self.gpu_used_mib = max(self.gpu_used_mib, self._gpu_used())
        out = (
            run_text(
                [
                    "nvidia-smi",
                    "--query-compute-apps=pid,used_memory",
                    "--format=csv,noheader,nounits",
                ]
            )
            or ""
        )
        for line in out.splitlines():
            pid, _, used = line.partition(",")
            if pid.strip().isdigit() and int(pid) in self.pids and used.strip().isdigit():
                self.process_mib = max(self.process_mib, float(used))

    def run(self) -> None:
        while self.available and not self._stop_event.wait(0.25):
            self._sample()

    def finish(self) -> dict | None:
        self._stop_event.set()
        if not self.available:
            return None
        self.join(5)
        self._sample()
        return {
            "process_max_mib": self.process_mib or None,
            "gpu_used_max_mib": self.gpu_used_mib,
            "gpu_used_before_mib": self.baseline_mib,
        }


def pick_dicoms(source: Path, n: int) -> list[Path]:
    """Up to ``n`` readable DICOMs of distinct content under ``source``, sorted by path."""
    from pneumo.errors import PneumoError
    from pneumo.io.imaging import read_image

    seen, out = set(), []
    for path in sorted(source.rglob("*.dcm")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            read_image(path)
        except PneumoError:
            continue
        out.append(path)
        if len(out) == n:
            break
    return out


def predict_run(
    backend: str,
    device: str,
    data: Path,
    out_json: Path,
    maps: Path,
    log: Path,
    bench: str | None,
    memory: GpuMemory | None = None,
) -> dict:
    """``predict_run.py`` under ``backend`` in its own process; its JSON report."""
    cmd = [
        sys.executable,
        str(PREDICT_RUN),
        str(data),
        "--device",
        device,
        "--out",
        str(out_json),
        "--maps",
        str(maps),
    ] + (["--bench", bench] if bench else [])
    if run_logged(cmd, backend, log, memory) != 0:
        raise RuntimeError(f"predict_run.py failed under {backend} (see {log.name})")
    return json.loads(out_json.read_text())


def run_logged(cmd: list[str], backend: str, log: Path, memory: GpuMemory | None = None) -> int:
    """Run ``cmd`` under ``KERAS_BACKEND=backend`` with its output appended to ``log``
    (after the command line); ``memory`` watches its process. Returns the exit code."""
    with open(log, "a") as fh:
        fh.write(f"$ KERAS_BACKEND={backend} {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=dict(os.environ, KERAS_BACKEND=backend),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        if memory is not None:
            memory.pids = {proc.pid}
        try:
            return proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def reference(prefix: Path, data: Path, weights_sha: str, work: Path, log: Path) -> dict:
    """The CPU outputs to compare with: ``PREFIX.json``/``.npz`` when they belong to
    these weights, else computed now on this machine's CPU (TensorFlow when it is
    installed, else torch)."""
    import numpy as np

    json_path, npz_path = prefix.with_suffix(".json"), prefix.with_suffix(".npz")
    if json_path.exists() and npz_path.exists():
        ref = json.loads(json_path.read_text())
        if ref["weights_sha256"] == weights_sha:
            ref["source"] = f"{json_path.name} (made by scripts/device/prepare.sh)"
            ref["maps"] = np.load(npz_path)["maps"]
            return ref
    backend = "tensorflow" if _version("tensorflow") else "torch"
    ref = predict_run(
        backend, "cpu", data, work / "reference.json", work / "reference.npz", log, None
    )
    ref["source"] = f"computed in this run on this machine's CPU under {backend}"
    ref["maps"] = np.load(work / "reference.npz")["maps"]
    return ref


def csrf_token(opener, url: str) -> str:
    """The browser session's CSRF token (the session cookie lands in the opener's jar)."""
    with opener.open(url + "/api/v1/csrf-token", timeout=30) as resp:
        return json.loads(resp.read())["csrf_token"]


def upload(opener, url: str, path: Path, csrf: str) -> tuple[float, int, dict]:
    """POST one file as the result page does: session cookie plus its CSRF token."""
    from helpers.localserver import multipart_file

    body, ctype = multipart_file(path.read_bytes(), path.name)
    req = urllib.request.Request(
        url + "/api/v1/predictions",
        data=body,
        method="POST",
        headers={"Content-Type": ctype, "X-CSRF-Token": csrf},
    )
    t0 = time.perf_counter()
    try:
        with opener.open(req, timeout=300) as resp:
            status, answer = resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, {"error": exc.read().decode(errors="replace")[:500]}
    return time.perf_counter() - t0, status, answer


def serve(backend: str, device: str, files: list[Path], rounds: int, out: Path) -> dict:
    """gunicorn with the bundled model under ``backend``; upload every file ``rounds`` times."""
    import numpy as np
    from helpers.localserver import LocalServer
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR

    memory = GpuMemory()
    memory.start()
    instance = Path(tempfile.mkdtemp(prefix=f"pneumo-check-{backend}-"))
    log = out / f"server_{backend}.log"
    env = {
        "KERAS_BACKEND": backend,
        "PNEUMO_DEVICE": device,
        "PNEUMO_LOG_LEVEL": "INFO",
        "PNEUMO_UPLOAD_RATE_LIMIT": "1000000 per minute",
    }
    row: dict = {}
    server = LocalServer(DEFAULT_MODEL_DIR, instance, log_path=log, env=env, timeout=300)
    try:
        row["cold_start_s"] = round(server.cold_start_s, 3)
        memory.pids = set(server.worker_pids())
        with urllib.request.urlopen(server.url + "/readyz", timeout=10) as resp:
            row["readyz"] = json.loads(resp.read())
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        csrf = csrf_token(opener, server.url)
        times, failures, probabilities = [], [], {}
        for _ in range(rounds):
            for path in files:
                seconds, status, answer = upload(opener, server.url, path, csrf)
                times.append(seconds)
                if status != 201:
                    failures.append({"file": path.name, "status": status, "answer": answer})
                    continue
                probabilities.setdefault(path.name, answer["results"][0]["probability"])
        row["uploads"] = {
            "n": len(times),
            "failed": len(failures),
            "first_s": round(times[0], 4),
            "p50_s": round(float(np.percentile(times, 50)), 4),
            "p95_s": round(float(np.percentile(times, 95)), 4),
            "max_s": round(max(times), 4),
            "failures": failures[:5],
        }
        row["api_probabilities"] = probabilities
    finally:
        server.stop()
        row["gpu_memory"] = memory.finish()
        shutil.rmtree(instance, ignore_errors=True)
    text = log.read_text(errors="replace")
    row["log"] = {
        "loaded_line": next(
            (line.split(": ", 1)[-1] for line in text.splitlines() if "loaded from" in line), None
        ),
        "tracebacks": text.count("Traceback"),
        "error_lines": text.count(" ERROR "),
    }
    return row


def cli_predict(backend: str, data: Path, work: Path, log: Path) -> dict:
    """The real ``pneumo predict`` command once at batch 16 (start-up included)."""
    scores = work / f"cli_scores_{backend}.csv"
    cmd = [
        sys.executable,
        "-m",
        "pneumo.cli",
        "predict",
        str(data),
        "--batch-size",
        "16",
        "--submission",
        str(work / f"cli_sub_{backend}.csv"),
        "--scores",
        str(scores),
    ]
    t0 = time.perf_counter()
    returncode = run_logged(cmd, backend, log)
    row = {"returncode": returncode, "wall_s_with_start_up": round(time.perf_counter() - t0, 2)}
    if returncode == 0 and scores.exists():
        with open(scores, newline="") as fh:
            rows = list(csv.reader(fh))
        row["probabilities"] = {r[0]: float(r[1]) for r in rows[1:]}
    return row


def largest_difference(ours: dict, ref: dict) -> float | None:
    """Largest |ours - ref| over the keys both have; ``None`` when none are shared."""
    shared = set(ours) & set(ref)
    return max(abs(ours[k] - ref[k]) for k in shared) if shared else None


def compare(row: dict, ref: dict) -> dict:
    """Each output of this backend against the CPU reference."""
    import numpy as np

    by_id = {f["image_id"]: f["probability"] for f in ref["files"]}
    by_file = {f["file"]: f["probability"] for f in ref["files"]}
    run = row.get("predict", {})
    out = {
        "reference": ref["source"],
        "reference_device": ref["device"],
        "tolerance": TOLERANCE,
        "probability_max_abs_diff": largest_difference(
            {f["image_id"]: f["probability"] for f in run.get("files", [])}, by_id
        ),
        "api_probability_max_abs_diff": largest_difference(
            row.get("serve", {}).get("api_probabilities", {}), by_file
        ),
        "cli_probability_max_abs_diff": largest_difference(
            row.get("cli_predict", {}).get("probabilities", {}), by_id
        ),
    }
    if "maps" in row:  # maps are in the order of each run's "files"; match them by image id
        maps = row.pop("maps")
        index = {f["image_id"]: i for i, f in enumerate(run["files"])}
        pairs = [
            (index[f["image_id"]], i) for i, f in enumerate(ref["files"]) if f["image_id"] in index
        ]
        if pairs:
            ours, theirs = zip(*pairs)
            out["map_max_abs_diff"] = float(
                np.abs(maps[list(ours)] - ref["maps"][list(theirs)]).max()
            )
    diffs = [v for k, v in out.items() if k.endswith("_diff")]
    out["within_tolerance"] = len(diffs) == 4 and all(
        d is not None and d <= TOLERANCE for d in diffs
    )
    return out


def check_backend(
    backend: str, args, files: list[Path], data: Path, ref: dict, work: Path, expect_gpu: bool
) -> dict:
    import numpy as np

    row: dict = {}
    log = args.out / f"predict_{backend}.log"
    log.write_text("")
    problems = row["problems"] = []
    try:
        row["serve"] = serve(backend, args.device, files, args.rounds, args.out)
        ready = row["serve"]["readyz"]
        row["device"] = ready.get("device")
        if ready.get("backend") != backend:
            problems.append(f"/readyz names backend {ready.get('backend')!r}")
        if row["serve"]["uploads"]["failed"]:
            problems.append(f"{row['serve']['uploads']['failed']} uploads failed")
        if row["serve"]["log"]["tracebacks"] or row["serve"]["log"]["error_lines"]:
            problems.append("the server log has errors or tracebacks")
    except Exception as exc:  # noqa: BLE001 - recorded, and the next steps still run
        problems.append(f"serving failed: {type(exc).__name__}: {str(exc)[-1500:]}")
    try:
        memory = GpuMemory()
        memory.start()
        try:
            row["predict"] = predict_run(
                backend,
                args.device,
                data,
                work / f"run_{backend}.json",
                work / f"run_{backend}.npz",
                log,
                "1,16",
                memory,
            )
        finally:
            row["predict_gpu_memory"] = memory.finish()
        row["maps"] = np.load(work / f"run_{backend}.npz")["maps"]
        on_gpu = any(w in row["predict"]["weights_device"].lower() for w in ("gpu", "cuda"))
        if expect_gpu and not on_gpu:
            problems.append(
                f"a GPU is present but the weights are on {row['predict']['weights_device']}"
            )
    except Exception as exc:  # noqa: BLE001
        problems.append(f"predict_run failed: {type(exc).__name__}: {exc}")
    try:
        row["cli_predict"] = cli_predict(backend, data, work, log)
        if row["cli_predict"]["returncode"]:
            problems.append(
                f"pneumo.cli predict exited with {row['cli_predict']['returncode']} "
                f"(see {log.name})"
            )
    except Exception as exc:  # noqa: BLE001
        problems.append(f"pneumo.cli predict failed: {type(exc).__name__}: {exc}")
    row["cpu_equality"] = compare(row, ref)
    if not row["cpu_equality"]["within_tolerance"]:
        problems.append(
            f"outputs differ from the CPU reference by more than {TOLERANCE} "
            "(or could not all be compared)"
        )
    if expect_gpu and not str(row.get("device", "")).startswith("GPU"):
        problems.append(f"a GPU is present but /readyz says {row.get('device')!r}")
    row["ok"] = not problems
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="jax torch", help="Keras backends, in order")
    p.add_argument("--device", default="auto", help="PNEUMO_DEVICE for every run: auto, cpu, gpu")
    p.add_argument(
        "--data", type=Path, help="folder of SIIM DICOMs (default: pick from ../shared/data/siim)"
    )
    p.add_argument("--files", type=int, default=40, help="at most this many DICOMs")
    p.add_argument("--reference", type=Path, default=ROOT / ".device_check" / "cpu_reference")
    p.add_argument("--rounds", type=int, default=2, help="uploads of each file")
    p.add_argument(
        "--budget-s",
        dest="budget_s",
        type=float,
        default=270,
        help="skip the backends left once this many seconds have passed",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the report and logs")
    args = p.parse_args(argv)
    started = time.perf_counter()
    # JAX: each process compiles the same network for the same batch shapes; a shared
    # cache lets the later ones (predict_run, the command) reuse what the server compiled
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="pneumo-jax-"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pneumo-check-"))
    data = work / "siim"
    data.mkdir()
    source = args.data if args.data and args.data.is_dir() else ROOT.parent / "shared/data/siim"
    files = []
    for path in pick_dicoms(source, args.files):
        shutil.copy(path, data / path.name)
        files.append(data / path.name)
    from pneumo.inference.predictor import DEFAULT_MODEL_DIR

    sys.path.insert(0, str(PREDICT_RUN.parent))
    from predict_run import weights_digest

    weights_sha = weights_digest(DEFAULT_MODEL_DIR)
    host = host_info()
    report = {
        "check": "scripts/device_check.sh (issue 16)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "PNEUMO_DEVICE": args.device,
            "backends": args.backends.split(),
            "files": len(files),
            "upload_rounds": args.rounds,
            "source": str(source),
        },
        "host": host,
        "model": {"dir": str(DEFAULT_MODEL_DIR), "weights_sha256": weights_sha},
        "backends": {},
    }
    report_path = args.out / "device_check.json"
    report_path.write_text(json.dumps(report, indent=2))  # something comes back even if cut short
    try:
        ref = reference(args.reference, data, weights_sha, work, args.out / "reference.log")
        report["reference"] = {k: v for k, v in ref.items() if k not in ("maps", "files")}
        expect_gpu = bool(host["gpus"]) and args.device != "cpu"
        for backend in args.backends.split():
            if time.perf_counter() - started > args.budget_s:
                report["backends"][backend] = {"ok": False, "problems": ["skipped: time budget"]}
                continue
            t0 = time.perf_counter()
            row = check_backend(backend, args, files, data, ref, work, expect_gpu)
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            report["backends"][backend] = row
            report["wall_s"] = round(time.perf_counter() - started, 1)
            report_path.write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["ok"] = bool(report["backends"]) and all(r["ok"] for r in report["backends"].values())
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary(report), indent=2))
    return 0 if report["ok"] else 1


def summary(report: dict) -> dict:
    """The figures of the report, one line per backend."""
    lines = {}
    for name, row in report["backends"].items():
        serve_row, pred = row.get("serve", {}), row.get("predict", {})
        bench = pred.get("predict_files", {})
        memory = serve_row.get("gpu_memory") or {}
        lines[name] = {
            "ok": row["ok"],
            "device": row.get("device"),
            "cold_start_s": serve_row.get("cold_start_s"),
            "upload_p50_s": serve_row.get("uploads", {}).get("p50_s"),
            "upload_p95_s": serve_row.get("uploads", {}).get("p95_s"),
            "predict_images_per_s_b1": bench.get("batch1", {}).get("images_per_s"),
            "predict_images_per_s_b16": bench.get("batch16", {}).get("images_per_s"),
            "server_gpu_mib": memory.get("process_max_mib"),
            "max_diff": row.get("cpu_equality", {}).get("probability_max_abs_diff"),
            "problems": row.get("problems"),
        }
    return {"ok": report["ok"], "wall_s": report.get("wall_s"), "backends": lines}


if __name__ == "__main__":
    sys.exit(main())
