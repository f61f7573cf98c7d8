"""The architecture stays visible: imports point one way, and files stay small."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dgemma"
# each layer may import only from layers listed before it
LAYERS = [
    "config",
    "model",
    "sampling",
    "engine",
    "text",
    "train",
    "tasks",
    "editing",
    "structured",
    "api",
    "apps",
    "live",
    "server",
    "harness",
    "cli_common",
    "cli_sudoku",
    "cli_bench",
    "cli",
]


def _layer(module: str) -> str:
    """'model.attention' -> 'model': the top-level part of a module path inside the package."""
    return module.split(".")[0]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dgemma."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dgemma."))
    return found


def test_imports_point_one_way():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        if own not in LAYERS:
            continue
        for module in _imports(path):
            target = _layer(module.removeprefix("dgemma."))
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(own):
                violations.append(f"{rel} imports {module}")
    assert not violations, violations


def test_config_and_sampling_do_not_import_a_model():
    for path in (PACKAGE / "config").glob("*.py"):
        assert "import torch" not in path.read_text(), path
    for path in (PACKAGE / "sampling").glob("*.py"):
        assert not any(m.startswith("dgemma.model") for m in _imports(path)), path


def test_files_stay_small():
    long = [
        f"{p.relative_to(PACKAGE)}: {n}"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not long, long
