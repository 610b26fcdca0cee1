"""The package's layers: a module imports only from its own layer or the ones below it, so
that inference (generation, export) never pulls in training and the command line stays on top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "charrnn"

# Lowest first. Modules at the top of the package are the core every layer may use.
LAYERS = ["core", "data", "model", "generation", "export", "inspect", "serve", "explore", "training", "bench", "cli"]
# Layers that must not depend on each other although one sits above the other.
APART = {
    ("export", "generation"), ("generation", "export"), ("inspect", "export"), ("inspect", "generation"),
    ("serve", "export"), ("export", "serve"), ("serve", "inspect"), ("inspect", "serve"),
    ("explore", "export"),
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "charrnn":
        raise ValueError(module)
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "core"


def charrnn_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("charrnn"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if (PACKAGE / node.module.split(".", 1)[-1].replace(".", "/") / f"{a.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("charrnn"))
    return found


def module_name(path: Path) -> str:
    return ".".join(("charrnn", *path.relative_to(PACKAGE).with_suffix("").parts))


def test_every_import_points_down_or_across_its_own_layer():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # `python -m charrnn`: the entry point, above everything
            continue
        here = layer_of(module_name(path)) if path.parent != PACKAGE else "core"
        for target in charrnn_imports(path):
            there = layer_of(target) if target.count(".") >= 1 else "core"
            if LAYERS.index(there) > LAYERS.index(here) or (here, there) in APART:
                wrong.append(f"{module_name(path)} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(wrong)


def test_every_subpackage_says_what_belongs_in_it():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, init
