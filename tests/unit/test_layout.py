"""The house's layout: no import circles between modules, between the rooms of `models/` or between packages,
and every arrow pointing the way the layout says (broker <- worker -> models, broker <- api -> models.store).

Imports are read from the source (every `import`, also those inside functions and under TYPE_CHECKING), so a
circle held together by a lazy import fails here as one at the top would.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "broker", "worker", "models", "partsight")
ROOMS = ("store", "extract", "answer", "train")
HEAVY = ("numpy", "torch", "torchvision", "sklearn", "PIL", "onnxruntime", "matplotlib")

# which packages a package may import (besides itself)
ALLOWED_PACKAGES = {
    "broker": set(),
    "models": {"broker"},  # the contract and the settings primitives only (below)
    "worker": {"broker", "models"},
    "api": {"broker", "models"},
    "partsight": {"api", "broker", "worker", "models"},
}
# which rooms (or root modules) of models/ each may import, besides itself and models.errors
ALLOWED_ROOMS = {
    "store": set(),
    "extract": set(),
    "answer": set(),
    "bundle": {"store", "extract", "answer"},
    "recognizer": {"bundle", "store", "extract", "answer"},
    "train": {"bundle", "store", "extract", "answer"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imported(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules `path` imports (for `from package import name`, the submodule when there is one)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            known = name
            while known and known not in modules:
                known = known.rpartition(".")[0]
            if known and known != this:
                yield known


def all_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module name `path` imports, the project's or not (top-level names for outside packages)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: set(imported(path, modules)) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def collapsed(graph: dict[str, set[str]], group: callable) -> dict[str, set[str]]:  # type: ignore[valid-type]
    out: dict[str, set[str]] = {}
    for source, targets in graph.items():
        name = group(source)
        if name is None:
            continue
        out.setdefault(name, set()).update(t for t in map(group, targets) if t is not None and t != name)
    return out


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "models" or len(parts) == 1 or parts[1] == "errors":
        return None
    return parts[1]


def test_the_models_package_has_its_four_rooms_and_the_root_modules() -> None:
    rooms = {path.parent.name for path in (ROOT / "models").glob("*/__init__.py")}
    assert rooms == set(ROOMS)
    assert {path.stem for path in (ROOT / "models").glob("*.py")} == {"__init__", "errors", "bundle", "recognizer"}


def test_no_module_imports_itself_back_through_others() -> None:
    assert circles(import_graph()) == []


def test_no_circle_between_the_rooms_of_models_and_arrows_point_down() -> None:
    rooms = collapsed(import_graph(), room_of)
    assert circles(rooms) == []
    for room, targets in rooms.items():
        assert targets <= ALLOWED_ROOMS[room], f"models/{room} imports {sorted(targets - ALLOWED_ROOMS[room])}"


def test_packages_point_one_way() -> None:
    packages = collapsed(import_graph(), lambda module: module.split(".")[0])
    assert circles(packages) == []
    for package, targets in packages.items():
        assert targets <= ALLOWED_PACKAGES[package], f"{package} imports {sorted(targets - ALLOWED_PACKAGES[package])}"


def test_models_reads_only_the_wire_contract_and_the_settings_primitives_of_broker() -> None:
    """The model store writes its timestamps as the contract does (one rfc3339) and reads its settings with the
    readers every process uses (one ReviewSettings.from_env); nothing of MQTT comes with them."""
    graph = import_graph()
    reached = {target for source, targets in graph.items() if source.startswith("models") for target in targets}
    assert {module for module in reached if module.startswith("broker")} <= {
        "broker.contract",
        "broker.settings",
        "broker.errors",  # SettingsError, for a bad setting
    }


def test_the_api_reads_only_the_light_store_of_models() -> None:
    graph = import_graph()
    reached = {target for source, targets in graph.items() if source.startswith("api") for target in targets}
    assert {module for module in reached if module.startswith("models")} <= {
        "models",
        "models.errors",
        *(module for module in graph if module.startswith("models.store")),
    }


@pytest.mark.parametrize("path", sorted((ROOT / "models" / "store").glob("*.py")), ids=lambda path: path.name)
def test_the_store_imports_nothing_heavy(path: Path) -> None:
    heavy = {name for name in all_imports(path, {}) if name.split(".")[0] in HEAVY}
    assert heavy == set()


def test_the_graph_sees_a_circle_held_by_a_lazy_import(tmp_path: Path) -> None:
    graph = {"models.a": {"models.b"}, "models.b": {"models.c"}, "models.c": {"models.a"}, "models.d": {"models.a"}}
    assert circles(graph) == [["models.a", "models.b", "models.c"]]
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from os import path\n    return path\n")
    assert "os" in all_imports(source, {})


def test_no_two_modules_share_a_job_name() -> None:
    """`enrol.py` four times and `review.py` three times made every grep a puzzle: one module of each name, besides
    the API's routes (named by their resource) and the packages' own settings, errors and metrics."""
    shared_on_purpose = {"__init__", "settings", "errors", "metrics", "app", "dispatch", "products", "recognize"}
    seen: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.stem not in shared_on_purpose:
                seen.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"  # beside a def (its line or the one above): why this function reads better whole


def long_functions() -> list[str]:
    """Product functions over MAX_FUNCTION_LINES lines that give no reason beside their `def`."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                beside = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
                if length > MAX_FUNCTION_LINES and LONG_MARK not in beside:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_product_function_is_over_sixty_lines_without_a_reason() -> None:
    assert long_functions() == []
