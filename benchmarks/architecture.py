"""Structural figures of the code base, for the re-cut's before/after (issue 21).

    python benchmarks/architecture.py

Prints: import cycles between modules of the product packages, imports between the web
entry points, raw database connections outside the store, direct environment reads
outside the settings module, imports inside functions, the largest files, and (issue 33)
the largest class by public methods, the ``app.config`` keys product code reads,
string-keyed ``app.extensions`` lookups, and the places that load a model.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pneumo", "app")
SETTINGS_MODULES = {"app/settings.py", "app/settings"}


def product_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return files + [ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]


def cycles(graph) -> list[tuple[str, str]]:
    mods = sorted(m for m in graph.modules if m.startswith(PACKAGES))
    found = set()
    for a in mods:
        for b in graph.find_modules_directly_imported_by(a):
            if b.startswith(PACKAGES) and graph.chain_exists(importer=b, imported=a):
                found.add(tuple(sorted((a, b))))
    return sorted(found)


def unit(module: str) -> str:
    """The room a module lives in: the second level of the dotted name (a subpackage or a
    top-level module)."""
    return ".".join(module.split(".")[:2])


def unit_cycles(graph) -> list[tuple[str, str]]:
    edges: dict[str, set[str]] = {}
    for a in graph.modules:
        if a.startswith(PACKAGES):
            for b in graph.find_modules_directly_imported_by(a):
                if b.startswith(PACKAGES) and unit(a) != unit(b):
                    edges.setdefault(unit(a), set()).add(unit(b))

    def reaches(src: str, dst: str) -> bool:
        seen, todo = set(), [src]
        while todo:
            n = todo.pop()
            if n == dst:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(edges.get(n, ()))
        return False

    return sorted({tuple(sorted((a, b))) for a, bs in edges.items() for b in bs if reaches(b, a)})


def entry_points(graph) -> set[str]:
    """The web layer's entry points: modules that register routes (a Blueprint) and the
    command line."""
    out = {"app.cli"}
    for m in graph.modules:
        if m.startswith("app."):
            path = ROOT / (m.replace(".", "/") + ".py")
            if not path.exists():
                path = ROOT / m.replace(".", "/") / "__init__.py"
            if path.exists() and "Blueprint(" in path.read_text():
                out.add(m)
    return out


def entry_cross_imports(graph) -> list[tuple[str, str]]:
    entries = entry_points(graph)
    return sorted(
        (a, b) for a in entries for b in graph.find_modules_directly_imported_by(a) if b in entries
    )


def scan(files: list[Path]) -> dict:
    inner, env, connects = [], [], []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        inner.append(f"{rel}:{node.lineno}")
        for node in ast.walk(tree):
            text = (
                ast.unparse(node)
                if isinstance(node, (ast.Call, ast.Subscript, ast.Attribute))
                else ""
            )
            reads = (
                (isinstance(node, ast.Call) and text.startswith(("os.environ.get(", "os.getenv(")))
                or (
                    isinstance(node, ast.Subscript)
                    and text.startswith("os.environ[")
                    and isinstance(node.ctx, ast.Load)
                )
                or (
                    isinstance(node, ast.Compare)
                    and "os.environ" in ast.unparse(node)
                    and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
                )
            )
            if reads and not any(rel.startswith(s) for s in SETTINGS_MODULES):
                env.append(f"{rel}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and text.split("(")[0].endswith(".connect")
                and "sqlite3" not in text
                and not rel.startswith("app/store")
            ):
                connects.append(f"{rel}:{node.lineno} {text.split('(')[0]}")
    return {"inner": sorted(set(inner)), "env": sorted(set(env)), "connects": sorted(set(connects))}


def classes_by_methods(files: list[Path]) -> list[tuple[int, str]]:
    """Every class with its count of public methods (``def`` not starting with ``_``)."""
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                n = sum(
                    1
                    for b in node.body
                    if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not b.name.startswith("_")
                )
                out.append((n, f"{rel}:{node.name}"))
    return sorted(out, reverse=True)


def config_and_extensions(files: list[Path]) -> tuple[set[str], list[str]]:
    """The upper-case ``app.config`` / ``current_app.config`` keys product code reads, and
    the places that look a service up by a string key in ``app.extensions``."""
    keys, lookups = set(), []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "setdefault")
            ):
                target = node.value if isinstance(node, ast.Subscript) else node.func.value
                name = ast.unparse(target)
                arg = node.slice if isinstance(node, ast.Subscript) else (node.args or [None])[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if name.endswith(".config") and arg.value.isupper():
                        keys.add(arg.value)
                    if name.endswith(".extensions"):
                        lookups.append(f"{rel}:{node.lineno}")
    return keys, lookups


def model_loads(files: list[Path]) -> list[str]:
    """Places that load a network for prediction: calls of ``Predictor.load``."""
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Predictor.load"):
                out.append(f"{rel}:{node.lineno}")
    return out


def main() -> int:
    # imports under ``if TYPE_CHECKING`` name a type for the reader; they never run
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    files = product_files()
    found = scan(files)
    sizes = sorted(
        ((len(p.read_text().splitlines()), p.relative_to(ROOT).as_posix()) for p in files),
        reverse=True,
    )
    cyc = cycles(graph)
    cross = entry_cross_imports(graph)
    print(f"modules: {len([m for m in graph.modules if m.startswith(PACKAGES)])}")
    print(f"import cycles (module pairs): {len(cyc)}")
    for a, b in cyc:
        print(f"  {a} <-> {b}")
    ucyc = unit_cycles(graph)
    print(f"cycles between rooms (subpackages or top-level modules): {len(ucyc)}")
    for a, b in ucyc:
        print(f"  {a} <-> {b}")
    print(f"entry-point cross-imports: {len(cross)}")
    for a, b in cross:
        print(f"  {a} -> {b}")
    print(f"raw connects outside the store: {len(found['connects'])}")
    for c in found["connects"]:
        print(f"  {c}")
    print(f"direct environment reads outside settings: {len(found['env'])}")
    for e in found["env"]:
        print(f"  {e}")
    print(f"imports inside functions: {len(found['inner'])}")
    print("largest files: " + ", ".join(f"{p} {n}" for n, p in sizes[:5]))
    classes = classes_by_methods(files)
    print(
        "largest classes by public methods: " + ", ".join(f"{name} {n}" for n, name in classes[:3])
    )
    keys, lookups = config_and_extensions(files)
    print(f"app.config keys read by product code: {len(keys)}")
    print(f"string-keyed app.extensions lookups: {len(lookups)}")
    scripts = sorted((ROOT / "scripts").rglob("*.py"))
    loads = model_loads(files + scripts)
    print(f"places that load a model (Predictor.load): {len(loads)}")
    for place in loads:
        print(f"  {place}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
