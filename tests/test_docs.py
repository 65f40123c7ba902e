"""README and the chapters in docs/ checked against the real thing.

* Every command they print (code blocks, and inline code that starts with a command)
  exists: ``pneumo`` subcommands answer ``--help`` and know the options shown; Python
  modules run with ``-m`` likewise; scripts and files named under the project's folders
  exist, and the argparse scripts answer ``--help`` and know the options shown;
  ``pip install -e ".[x]"`` names a real extra; ``flask --app APP COMMAND`` answers ``--help``;
  a ``.venv/bin/X`` exists in the development environment.
* Every ``PNEUMO_*`` variable they name is one that ``app/settings.py`` reads (or one of a
  few read by a named script), and every one it reads is in ``docs/configuration.md``'s
  table.
* Every relative link (and its ``#anchor``) in README and ``docs/*.md`` resolves.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

#: README and its chapters, each linked from README; their commands are checked.
CHAPTERS = [
    "README.md",
    "docs/using.md",
    "docs/operations.md",
    "docs/api.md",
    "docs/configuration.md",
    "docs/model.md",
    "docs/testing.md",
]
#: Every Markdown page whose links are checked.
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
#: ``PNEUMO_*`` variables the docs may name that are not service settings: who reads each.
NOT_SETTINGS = {
    "PNEUMO_VENV": "scripts/setup.sh",
    "PNEUMO_HOME": "pneumo/paths.py",
    "PNEUMO_FUZZ_CASES": "tests/test_fuzz.py",
    "PNEUMO_SCREENSHOT_DIR": "tests/test_browser.py",
}
#: Scripts whose ``--help`` costs seconds (Keras is imported before the arguments are
#: parsed): their documented options are checked in the source instead.
SLOW_HELP = {"scripts/fit_chest_gate.py"}
#: Folders of the project: a token under one of them, with one of these suffixes, is a file
#: that must exist (``models/NEW``, ``runs/NAME``, ``deploy/.env`` are placeholders or made
#: by the command).
PROJECT_DIRS = (
    "scripts/",
    "benchmarks/",
    "tests/",
    "configs/",
    "splits/",
    "deploy/",
    "models/",
    "docs/",
    "docker/",
    "notebooks/",
)
FILE_SUFFIXES = {".py", ".sh", ".json", ".csv", ".yaml", ".yml", ".md", ".ipynb", ".png"}
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PYTHON = re.compile(r"(.*/)?python(3(\.\d+)?)?$")
VARIABLE = re.compile(r"PNEUMO_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*\*)")  # not PNEUMO_DICOMWEB_*


# -- reading Markdown ------------------------------------------------------------------


def read(page: str) -> str:
    return (ROOT / page).read_text()


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The text without fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def shell_lines(text: str) -> list[str]:
    """The command lines of a page: shell code blocks (continuations joined, comments
    cut) and inline code spans."""
    lines = []
    for lang, body in fenced_blocks(text):
        if lang in SHELL_LANGS:
            lines += [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    lines += re.findall(r"`([^`\n]+)`", prose(text))
    return lines


def words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an inline fragment with an open quote
        return line.split()


def commands(line: str) -> list[list[str]]:
    """The simple commands of one line, without leading ``NAME=value`` assignments."""
    out, current = [], []
    for word in words(line) + ["|"]:
        if word in ("|", "||", "&&", ";"):
            while current and re.match(r"[A-Z_][A-Z0-9_]*=", current[0]):
                current.pop(0)
            if current:
                out.append(current)
            current = []
        else:
            current.append(word)
    return out


# -- the real things -------------------------------------------------------------------


@functools.cache
def console_scripts() -> dict[str, str]:
    """``[project.scripts]``: command name -> ``module:function``."""
    return tomllib.loads(read("pyproject.toml"))["project"]["scripts"]


@functools.cache
def extras() -> set[str]:
    return set(tomllib.loads(read("pyproject.toml"))["project"]["optional-dependencies"])


def entry(spec: str):
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function or "main")


@functools.cache
def cli_help(spec: str, path: tuple[str, ...]) -> str:
    """The ``--help`` text of a command (``path``: its subcommands), called in process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = entry(spec)([*path, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"{spec} {' '.join(path)} --help: exit {code} {err.getvalue()}"
    return out.getvalue()


def subcommands(help_text: str) -> set[str]:
    """The subcommands an argparse help text offers (``{a,b,c} ...`` in its usage)."""
    usage = help_text.split("\n\n", 1)[0]
    found = re.search(r"\{([\w,-]+)\}\s+\.\.\.", usage)
    return set(found.group(1).split(",")) if found else set()


def long_options(args: list[str]) -> list[str]:
    return [re.sub(r"[\[\]]|=.*", "", a) for a in args if a.lstrip("[").startswith("--")]


def missing_options(args: list[str], text: str) -> list[str]:
    return [o for o in long_options(args) if not re.search(rf"(?<![\w-]){o}(?![\w-])", text)]


def check_cli(spec: str, args: list[str], shown: str) -> list[str]:
    """Problems with one invocation of an argparse entry point."""
    path: list[str] = []
    text = cli_help(spec, ())
    for word in (a for a in args if not a.startswith(("-", "["))):
        choices = subcommands(text)
        if not choices:
            break
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", word):  # `pneumo COMMAND --help`: a placeholder
            return []
        if word not in choices:
            return [f"{shown}: {word!r} is not a subcommand (choices: {sorted(choices)})"]
        path.append(word)
        text = cli_help(spec, tuple(path))
    return [
        f"{shown}: no option {o} in `{' '.join(path)} --help`" for o in missing_options(args, text)
    ]


def check_flask(args: list[str], shown: str) -> list[str]:
    """``flask --app APP COMMAND...``: the command's ``--help`` answers (a subprocess with
    the environment's ``flask``) and knows the options shown."""
    app = args[args.index("--app") + 1] if "--app" in args[:-1] else None
    rest = [a for a in args if a not in ("--app", app)]
    path = [a for a in rest if not a.startswith(("-", "["))][:1]  # one level of commands
    flask = [str(Path(sys.executable).parent / "flask"), *(["--app", app] if app else [])]
    res = subprocess.run(
        [*flask, *path, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    if res.returncode != 0:
        return [f"{shown}: `flask {' '.join(path)} --help` exits {res.returncode}"]
    return [
        f"{shown}: no option {o} in `flask {' '.join(path)} --help`"
        for o in missing_options(rest, res.stdout)
    ]


def project_files(args: list[str], shown: str) -> list[str]:
    """Problems with the project files a command names."""
    problems = []
    for word in args:
        word = word.strip("[]")
        if (
            word.removeprefix("./").startswith(PROJECT_DIRS)
            and Path(word).suffix in FILE_SUFFIXES
            and not (ROOT / word).exists()
        ):
            problems.append(f"{shown}: no file {word}")
    return problems


def check_command(cmd: list[str], shown: str, scripts: dict[str, list[str]]) -> list[str]:
    """Problems with one simple command; Python scripts to ``--help`` go to ``scripts``."""
    program, args = cmd[0], cmd[1:]
    name = program.rsplit("/", 1)[-1]
    problems = []
    if program.startswith(".venv/bin/") and not (Path(sys.executable).parent / name).exists():
        problems.append(f"{shown}: the development environment has no {program}")
    if name in console_scripts() and not program.endswith("/"):
        problems += check_cli(console_scripts()[name], args, shown)
    elif name == "flask":
        problems += check_flask(args, shown)
    elif name == "docker" and "pneumo" in args:  # docker run ... IMAGE pneumo SUBCOMMAND
        at = [i for i, a in enumerate(args[:-1]) if a == "pneumo" and args[i + 1] == "pneumo"]
        if at:
            problems += check_command(args[at[0] + 1 :], shown, scripts)
    elif PYTHON.match(program) and args[:1] == ["-m"]:
        module = args[1]
        if module.startswith(("pneumo.", "app.")):
            problems += check_cli(f"{module}:main", args[2:], shown)
        elif importlib.util.find_spec(module) is None:
            problems.append(f"{shown}: no module {module}")
    elif PYTHON.match(program) or name in ("bash", "sh"):
        if args and Path(args[0]).suffix in (".py", ".sh"):
            problems += check_command(args, shown, scripts)
    elif Path(program).suffix in (".py", ".sh") and "/" in program:  # not a bare name
        if not (ROOT / program).exists():  # (project_files names a missing project file)
            problems += [] if program.startswith(PROJECT_DIRS) else [f"{shown}: no {program}"]
        elif (
            program.startswith(("scripts/", "benchmarks/"))
            and program.endswith(".py")
            and "argparse" in read(program)
        ):
            scripts.setdefault(program, []).extend(args)
    elif name == "pip" and "install" in args:
        for wanted in re.findall(r"\.\[([\w,-]+)\]", " ".join(args)):
            problems += [
                f"{shown}: no extra [{x}] in pyproject.toml"
                for x in wanted.split(",")
                if x not in extras()
            ]
    return problems


HELP_DRIVER = """
import contextlib, io, json, os, runpy, sys
out = {}
for path in sys.argv[1:]:
    sys.argv, text, code = [path, "--help"], io.StringIO(), None
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # as `python path` does
    try:
        with contextlib.redirect_stdout(text):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    out[path] = [code, text.getvalue()]
print("HELP " + json.dumps(out))
"""


def page_commands(page: str) -> tuple[list[str], dict[str, list[str]]]:
    """The problems with a page's commands, and the options it gives each Python script."""
    problems: list[str] = []
    scripts: dict[str, list[str]] = {}
    for line in shell_lines(read(page)):
        for cmd in commands(line):
            shown = f"{page}: `{line.strip()}`"
            problems += project_files(cmd, shown) + check_command(cmd, shown, scripts)
    return problems, scripts


@functools.cache
def script_helps() -> dict[str, tuple[int | None, str]]:
    """``--help`` of every argparse script the chapters run (except ``SLOW_HELP``), all in
    one fresh interpreter."""
    paths = sorted({s for page in CHAPTERS for s in page_commands(page)[1]} - SLOW_HELP)
    if not paths:
        return {}
    res = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, *paths],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    last = [line for line in res.stdout.splitlines() if line.startswith("HELP ")]
    assert res.returncode == 0 and last, res.stderr[-3000:]
    return json.loads(last[-1].removeprefix("HELP "))


def source_options(script: str) -> set[str]:
    """The ``--options`` a script's source declares (string constants)."""
    tree = ast.parse(read(script))
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("--")
    }


# -- the tests -------------------------------------------------------------------------


def test_readme_links_every_chapter_and_a_screenshot():
    readme = read("README.md")
    for chapter in CHAPTERS[1:] + ["docs/architecture.md"]:
        assert f"]({chapter})" in readme, f"README does not link {chapter}"
    assert re.search(r"!\[[^\]]+\]\(docs/[\w.-]+\.png\)", readme), "no screenshot in README"


@pytest.mark.parametrize("page", CHAPTERS)
def test_commands_exist_and_take_the_options_shown(page):
    problems, scripts = page_commands(page)
    for script in sorted(set(scripts) - SLOW_HELP):
        code, text = script_helps()[script]
        if code not in (0, None):
            problems.append(f"{page}: `python {script} --help` exits {code}")
        problems += [
            f"{page}: {script} has no option {o}" for o in missing_options(scripts[script], text)
        ]
    for script in sorted(set(scripts) & SLOW_HELP):
        declared = source_options(script)
        problems += [
            f"{page}: {script} declares no option {o}"
            for o in long_options(scripts[script])
            if o not in declared
        ]
    assert not problems, "\n".join(problems)


def settings_read() -> set[str]:
    """Every ``PNEUMO_*`` variable the settings ask for (``app.settings.setting_names``
    records what ``Settings.from_env`` reads from an empty environment)."""
    from app.settings import PREFIX, setting_names

    return {PREFIX + name for name in setting_names()}


def test_every_documented_variable_is_read_and_every_setting_documented():
    read_vars = settings_read()
    assert len(read_vars) > 40 and "PNEUMO_DICOMWEB_URL" in read_vars
    problems = []
    for page in PAGES:
        for var in sorted(set(VARIABLE.findall(read(page))) - read_vars):
            if var not in NOT_SETTINGS:
                problems.append(f"{page} names {var}, which app/settings.py does not read")
            elif var not in read(NOT_SETTINGS[var]):
                problems.append(f"{page} names {var}, but {NOT_SETTINGS[var]} does not read it")
    in_table = {v for cells in settings_rows() for v in VARIABLE.findall(cells[0])}
    problems += [f"docs/configuration.md's tables lack {v}" for v in sorted(read_vars - in_table)]
    assert not problems, "\n".join(problems)


def settings_rows() -> list[list[str]]:
    """The cells of the settings tables in docs/configuration.md (before "Not settings")."""
    text = read("docs/configuration.md").split("## Not settings", 1)[0]
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| `PNEUMO_")
    ]


def same(shown: str, actual) -> bool:
    """A default as written in the docs against the settings' value."""
    if isinstance(actual, bool):
        return shown.lower() in (("1", "true") if actual else ("0", "false"))
    if isinstance(actual, (int, float)):
        return float(shown) == actual
    if isinstance(actual, (list, tuple)):
        return shown == ",".join(actual)
    if shown.endswith("/"):  # a folder of the project
        return Path(actual) == ROOT / shown
    return shown == actual


def test_documented_defaults_are_the_settings_defaults():
    """A default that docs/configuration.md writes in code (`8000`, `false`, `uploads/`)
    is the one ``pneumo settings`` prints with nothing set."""
    from app.settings import Settings

    values = Settings.from_env({}).to_dict()
    renamed = {"dicomweb_retry_after": "retry_after_s"}
    problems, checked = [], 0
    for variable, default, _ in settings_rows():
        shown = re.match(r"`([^`]+)`", default)
        if not shown:  # "the card's default", "one per core": said in words
            continue
        key = variable.strip("`").removeprefix("PNEUMO_").lower()
        where = values["pacs"] if key.startswith("dicomweb_") else values
        key = renamed.get(key, key.removeprefix("dicomweb_"))
        if key not in where:
            problems.append(f"{variable}: no setting {key!r} in `pneumo settings`")
        elif where[key] is not None and not same(shown.group(1), where[key]):
            problems.append(
                f"{variable}: the docs say {shown.group(1)}, the settings {where[key]!r}"
            )
        checked += where.get(key) is not None
    assert checked > 25 and not problems, "\n".join(problems)


def anchors(page: str) -> set[str]:
    """GitHub's anchors for the headings of a page."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", prose(read(page)), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    text = re.sub(r"`[^`\n]*`", "", prose(read(page)))
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (ROOT / page).parent / file if file else ROOT / page
        if not path.exists():
            problems.append(f"{page}: {target} -> no {os.path.relpath(path, ROOT)}")
        elif (
            anchor
            and path.suffix == ".md"
            and anchor not in anchors(str(path.resolve().relative_to(ROOT)))
        ):
            problems.append(f"{page}: {target} -> no heading #{anchor}")
    assert not problems, "\n".join(problems)
