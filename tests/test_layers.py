"""The layers written in pyproject.toml hold: the core never imports the web layer,
serving never imports the training pipeline (import-linter checks every import,
including those inside functions)."""
import os
import subprocess
import sys

from conftest import ROOT


def test_import_contracts_are_kept():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    res = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "2 kept, 0 broken" in res.stdout


def test_core_cli_runs_without_the_web_layer():
    """`python -m pneumo.cli` (the core) lists no web command and never loads Flask."""
    code = ("import sys; from pneumo.cli import build_parser; build_parser(); "
            "assert 'flask' not in sys.modules and 'app' not in sys.modules, sorted(sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "pneumo.cli", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120).stdout
    assert "predict" in out and "purge" not in out and "create-user" not in out
    full = subprocess.run([sys.executable, "-m", "app.cli", "--help"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120).stdout
    assert "predict" in full and "purge" in full and "pacs" in full
