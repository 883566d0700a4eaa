"""The layout a newcomer reads from folder names (README, "Layout"): data flows one way through the
packages (no import circle, no import from a layer above), no module over 400 lines, nothing
imports ``__main__``, no ``sys.path`` edit in benchmarks/, no benchmark script named like an importable
module, and every command's ``--help`` works."""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hnet_dna"

# Bottom first: a module imports from its own layer or the layers below it, never above.
LAYERS = [
    ("config", "tokenizer", "backends", "baselines"),  # foundations: no model
    ("weights", "kernels"),  # files in and out (no model import); Triton kernels
    ("model",),
    ("optim", "data"),
    ("tasks", "hf"),  # LightningModules and callbacks; transformers' classes over the model
    ("io", "runs"),  # what the commands read and write; how they run
    ("inference", "cli"),
    ("interpret", "protocols"),
    ("embed", "score", "ism", "boundaries", "finetune", "annotate", "data_efficiency", "__main__", "__init__"),  # front doors, API
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or inside functions (a lazy
    import is still a dependency)."""
    # resources/ holds data: a shipped model folder's code files are for transformers to run
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "resources" not in p.relative_to(PACKAGE).parts}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(k for k, names in enumerate(LAYERS) if top in names)


def test_no_import_circle_and_no_import_from_a_layer_above():
    graph = import_graph()
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if _layer(b) > _layer(a)]
    assert not upward, "imports from a layer above (see LAYERS):\n" + "\n".join(sorted(upward))
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [module, target]))
            if not state.get(target):
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [])


def test_no_module_over_400_lines():
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these by concern: {long}"


def test_nothing_imports_main_and_benchmarks_edit_no_sys_path():
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] + [a.name for a in node.names] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "__main__" or n.endswith(".__main__") for n in names) and path.name != "__main__.py":
                offenders.append(f"{path.relative_to(ROOT)} imports __main__")
    for path in (ROOT / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # sys.path or site.addsitedir in code (not in prose)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                    (node.value.id, node.attr) in (("sys", "path"), ("site", "addsitedir"))):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_no_benchmark_script_is_named_like_an_importable_module():
    # Running a script puts benchmarks/ first on sys.path, so a script named like a package would
    # answer that package's imports: benchmarks/kernels.py once answered transformers' ``import
    # kernels`` (peft loads transformers) and failed every LoRA test that ran after it.
    # The path finder, not importlib.util.find_spec: other tests have loaded benchmark scripts
    # (tests/conftest.py's import_benchmark), and find_spec would answer from sys.modules.
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
    taken = [p.name for p in (ROOT / "benchmarks").glob("*.py")
             if p.stem in sys.builtin_module_names or importlib.machinery.PathFinder.find_spec(p.stem, elsewhere)]
    assert not taken, f"rename these benchmarks/ scripts, installed modules have their names: {taken}"


@pytest.mark.parametrize("command, argv", [
    ("hnet_dna.cli", ["--help"]), ("hnet_dna.cli", ["fit", "--help"]), ("hnet_dna.embed", ["--help"]),
    ("hnet_dna.score", ["--help"]), ("hnet_dna.ism", ["--help"]), ("hnet_dna.boundaries", ["--help"]),
    ("hnet_dna.finetune", ["--help"]), ("hnet_dna.data_efficiency", ["--help"]),
])
def test_every_documented_command_answers_help(command, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        importlib.import_module(command).main(argv)
    assert stop.value.code == 0 and "usage:" in out.getvalue()
