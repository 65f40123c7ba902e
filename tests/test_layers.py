"""The layers written in pyproject.toml hold: the core never imports the web layer,
serving never imports the training pipeline, the core's rooms import downwards only,
the base modules import no room, and the store's rooms never import each other
(import-linter checks every import, including those inside functions)."""

import os
import subprocess
import sys

from conftest import ROOT


def test_import_contracts_are_kept():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    res = subprocess.run(
        [lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "8 kept, 0 broken" in res.stdout


def test_ruff_lint_and_format_are_clean():
    """``ruff check`` and ``ruff format --check`` (configured in pyproject.toml) pass on
    the whole tree: product, tests, scripts and benchmarks."""
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    for args in (["check", "."], ["format", "--check", "."]):
        res = subprocess.run([ruff, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert res.returncode == 0, f"ruff {' '.join(args)}:\n{res.stdout[-3000:]}{res.stderr}"


def test_core_cli_runs_without_the_web_layer():
    """`python -m pneumo.cli` (the core) lists no web command and never loads Flask."""
    code = (
        "import sys; from pneumo.cli import build_parser; build_parser(); "
        "assert 'flask' not in sys.modules and 'app' not in sys.modules, sorted(sys.modules)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = subprocess.run(
        [sys.executable, "-m", "pneumo.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    ).stdout
    assert "predict" in out and "purge" not in out and "create-user" not in out
    full = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    ).stdout
    assert "predict" in full and "purge" in full and "pacs" in full


def _names(lines):
    import re

    out = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            out.add(re.split(r"[<>=!\[ ;]", line, maxsplit=1)[0].lower())
    return out


def test_pyproject_and_requirement_files_name_the_same_packages():
    """requirements*.txt pin exactly what pyproject.toml declares: serving in
    requirements.txt, the train extra in requirements-train.txt."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serving = _names((ROOT / "requirements.txt").read_text().splitlines())
    train = _names((ROOT / "requirements-train.txt").read_text().splitlines())
    assert _names(project["dependencies"]) == serving
    assert _names(project["optional-dependencies"]["train"]) == train
    assert not ({"tqdm", "matplotlib", "torch"} & serving)  # kept out of the serving image
    pins = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all("==" in line for line in pins), pins


def test_settings_defaults_and_folders(tmp_path):
    from app.settings import Settings, SettingsError
    from pneumo import paths

    s = Settings.from_env({})
    assert s.data_dir == ROOT / "uploads" and s.model_dir == paths.default_model_dir()
    assert s.model_dir.is_dir() and (s.model_dir / "model.json").exists()
    assert s.bind == "127.0.0.1:8000" and s.loopback and s.workers == 1
    inst = Settings.from_env({"PNEUMO_INSTANCE_DIR": str(tmp_path)})
    assert inst.data_dir == tmp_path / "data"
    assert Settings.from_env({"PNEUMO_DATA_DIR": str(tmp_path / "x")}).data_dir == tmp_path / "x"
    for bad in (
        {"PNEUMO_PORT": "eighty"},
        {"PNEUMO_WORKERS": "0"},
        {"PNEUMO_RETENTION_DAYS": "a month"},
    ):
        try:
            Settings.from_env(bad)
        except SettingsError as exc:
            assert next(iter(bad)) in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_architecture_page_names_every_product_module():
    """docs/architecture.md stays true: each module of pneumo/ and app/ is named on it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for package in ("pneumo", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if f"`{name}`" not in text and f"`{name} " not in text:
                missing.append(name)
    assert not missing, f"not in docs/architecture.md: {missing}"
