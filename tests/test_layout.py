"""The architecture stays visible: imports point one way, and files stay small."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dgemma"
# each layer may import only from layers listed before it
LAYERS = [
    "config",
    "tasks",
    "model",
    "sampling",
    "engine",
    "images",
    "text",
    "structured",
    "generation",
    "train",
    "api_logits",
    "api",
    "apps",
    "server",
    "harness",
    "cli",
]


def _layer(module: str) -> str:
    """'model.attention' -> 'model': the top-level part of a module path inside the package."""
    return module.split(".")[0]


def _imports(path: Path) -> set[str]:
    """Modules of the package a file imports; `from dgemma import X` counts as importing the module
    that X comes from (a subpackage, or the facade's source module)."""
    import dgemma

    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "dgemma":
            for alias in node.names:
                found.add(dgemma._EXPORTS.get(alias.name, f"dgemma.{alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dgemma."):
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


def test_from_dgemma_import_counts_as_a_layer_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from dgemma import load, SamplerConfig\nfrom dgemma import apps\n")
    assert _imports(f) == {"dgemma.api", "dgemma.config", "dgemma.apps"}


def test_command_line_parsing_and_the_package_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, dgemma\nfrom dgemma.cli.main import build_parser\nbuild_parser()\n"
        "from dgemma.tasks import sudoku\nfrom dgemma.tasks.sudoku import format, files\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_config_and_sampling_do_not_import_a_model():
    for path in [*(PACKAGE / "config").glob("*.py"), *(PACKAGE / "tasks").rglob("*.py")]:
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
