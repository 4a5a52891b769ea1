"""Import rules for the project's own packages: executions, tenants and enact_platform.

The test reads the source of every module under those packages with `ast` (it imports none of
them), finds the project modules each one imports, and checks that:

1. no modules import each other in a cycle;
2. every import points down or sideways in LAYERS, never up (and services never import the runtime);
3. tenants never imports executions;
4. an import inside a function or class has a comment saying why it is not at the top of the file;
5. every entry in EXCEPTIONS is still needed.

Every import counts, at the top of a file or inside a function or class, except those under
`if TYPE_CHECKING:`, which never run. Failures list each offending import as
"importer -> imported (line N)". To fix one, move the code to the layer it belongs in, or have the
layer above pass in what the code needs; add to EXCEPTIONS only as a last resort, with a reason.

The checks work on a {module name: (path, source)} mapping, so the tests at the bottom run the
very same code on small made-up trees to prove that each check catches what it should.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from collections import defaultdict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# The layers, from the bottom (0) to the top. A module belongs to the layer of the longest prefix
# of its name listed here, so "executions.live.sse" is an interface although "executions.live" is
# data. A package's own __init__.py is named "<package>.__init__". A module may import from its
# own layer and the layers below it, never from a layer above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # 0: the plain-Python engine that runs a graph; it knows nothing of Django, tenants or storage.
    ("kernel", ("executions.kernel",)),
    # 1: the vocabulary: blueprints, the node registry, graphs, platform errors and settings.
    (
        "domain",
        (
            "executions.blueprints",
            "executions.registry",
            "executions.graphs",
            "enact_platform.errors",
            "enact_platform.locks",
            "enact_platform.settings",
        ),
    ),
    # 2: the Django models, and the tenant secrets stored with them.
    ("models", ("executions.models", "tenants.models", "tenants.secrets")),
    # 3: reading and writing data: queries, persistence, the live event log, the queue, locks, ops.
    (
        "data",
        (
            "executions.catalog",
            "executions.selectors",
            "executions.stats",
            "executions.persistence",
            "executions.live",
            "executions.queue",
            "executions.wakeups",
            "executions.ops",
            "tenants.services",
            "tenants.selectors",
        ),
    ),
    # 4: the use cases: what the platform does with executions, and the runtime that runs them.
    ("use cases", ("executions.services", "executions.runtime")),
    # 5: what the outside world talks to (HTTP, sockets, admin, tasks, commands) and the app wiring.
    (
        "interfaces",
        (
            "executions.api",
            "executions.api_derived",
            "executions.api_schedules",
            "executions.api_webhooks",
            "executions.admin_webhooks",
            "executions.serializers",
            "executions.admin",
            "executions.views",
            "executions.urls",
            "executions.tasks",
            "executions.apps",
            "executions.management",
            "executions.live.sse",
            "executions.live.sockets",
            "executions.live.feed",
            "tenants.admin",
            "tenants.admin_scoping",
            "tenants.api",
            "tenants.apps",
            "enact_platform.webserver",
            "enact_platform",  # everything in enact_platform not placed lower: urls, asgi, wsgi, api, ...
            "executions.__init__",
            "tenants.__init__",
        ),
    ),
)

# Imports the rules forbid but that are allowed anyway: {(importer, imported): why}. Keep it empty
# if at all possible; test_every_exception_is_still_needed fails once an entry is no longer needed.
# An exception lifts the layer rules and the tenants rule for that import, never the cycle rule.
EXCEPTIONS: dict[tuple[str, str], str] = {}

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("executions", "tenants", "enact_platform")

# {module name: (path relative to the repository, source)}, e.g. {"tenants": (Path("tenants/__init__.py"), "")}
Modules = Mapping[str, tuple[Path, str]]


# Reading the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import of a project module by another."""

    source: str  # the importing module, e.g. "executions.api"
    target: str  # the imported module, e.g. "executions.models"
    path: str  # the importing file, e.g. "executions/api.py"
    line: int
    scope: str  # where the import statement sits: "module", "function" or "class"
    commented: bool  # a comment on the statement's own line(s), or on the line just above it


def modules_from_files(files: Mapping[str, str]) -> dict[str, tuple[Path, str]]:
    """{"executions/kernel/__init__.py": source, ...} -> {"executions.kernel": (path, source), ...}"""
    modules = {}
    for file, source in files.items():
        path = Path(file)
        parts = list(path.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name in modules and path.name != "__init__.py":
            continue  # as in Python, a package shadows a module of the same name beside it
        modules[name] = (path, source)
    return modules


def read_repository(root: Path = ROOT) -> dict[str, tuple[Path, str]]:
    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if "migrations" not in relative.parts:
                files[relative.as_posix()] = path.read_text(encoding="utf-8")
    return modules_from_files(files)


def parse_imports(modules: Modules) -> list[Import]:
    """Every import of a project module, by every module of ``modules``."""
    return [imp for imp in parse_all_imports(modules) if imp.target.split(".")[0] in PACKAGES]


def parse_all_imports(modules: Modules) -> list[Import]:
    """Every import statement's targets, of project modules and of others (the standard library,
    Django, ...): an import inside a function needs its reason whatever it imports."""
    imports = []
    for module, (path, source) in sorted(modules.items()):
        collector = _ImportCollector(module, path, source, modules.keys())
        collector.visit(ast.parse(source, filename=str(path)))
        imports.extend(collector.imports)
    return imports


class _ImportCollector(ast.NodeVisitor):
    """Collects one module's imports of project modules, and where each one sits."""

    def __init__(self, module: str, path: Path, source: str, known: Collection[str]) -> None:
        self.module = module
        self.path = path
        self.known = known
        self.comment_lines = {
            token.start[0]
            for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type == tokenize.COMMENT
        }
        self.scope = "module"
        self.imports: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._visit_inside(node, "function")

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_inside(node, "class")

    def _visit_inside(self, node: ast.AST, scope: str) -> None:
        outer, self.scope = self.scope, scope
        self.generic_visit(node)
        self.scope = outer

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not type_checking:
            self.generic_visit(node)
            return
        for child in node.orelse:  # only the `if TYPE_CHECKING:` body never runs
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self._add(node, [alias.name for alias in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute_name(node)
        # `from pkg import name` imports the submodule pkg.name if there is one, else takes a name from pkg.
        submodules = (f"{base}.{alias.name}" for alias in node.names)
        self._add(node, [name if name in self.known else base for name in submodules])

    def _absolute_name(self, node: ast.ImportFrom) -> str:
        """The module `from X import ...` reads from, with a relative X made absolute."""
        if not node.level:
            return node.module or ""
        package = self.module.split(".")
        if self.path.name != "__init__.py":
            package.pop()
        package = package[: len(package) - (node.level - 1)]
        return ".".join([*package, node.module] if node.module else package)

    def _add(self, node: ast.Import | ast.ImportFrom, targets: list[str]) -> None:
        lines = range(node.lineno - 1, (node.end_lineno or node.lineno) + 1)
        commented = not self.comment_lines.isdisjoint(lines)
        for target in dict.fromkeys(targets):
            self.imports.append(Import(self.module, target, self.path.as_posix(), node.lineno, self.scope, commented))


# The checks: each returns its problems, one string per problem, empty when all is well ---------


def _edge(imp: Import) -> str:
    return f"{imp.source} -> {imp.target} (line {imp.line})"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(f"{prefix}.")


def _graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if imp.source != imp.target:
            graph[imp.source].add(imp.target)
    return graph


def import_cycles(imports: Iterable[Import]) -> list[list[str]]:
    """The groups of two or more modules that import each other, directly or through others
    (the strongly connected components of the import graph, found with Tarjan's algorithm)."""
    graph = _graph(imports)
    order: dict[str, int] = {}  # when the search first reached each module
    lowest: dict[str, int] = {}  # the earliest module on the stack that each one leads back to
    stack: list[str] = []
    groups = []

    def visit(module: str) -> None:
        order[module] = lowest[module] = len(order)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in order:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], order[target])
        if lowest[module] == order[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return sorted(groups)


def _shortest_cycle(start: str, graph: Mapping[str, set[str]], members: set[str]) -> list[str]:
    paths = {start: [start]}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph.get(module, ())):
            if target == start:
                return [*paths[module], start]
            if target in members and target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    return [start]


def cycle_problems(imports: Iterable[Import]) -> list[str]:
    imports = list(imports)
    graph = _graph(imports)
    problems = []
    for group in import_cycles(imports):
        members = set(group)
        inside = [_edge(imp) for imp in imports if imp.source in members and imp.target in members]
        problems.append(
            "\n  ".join(
                [
                    f"{len(group)} modules import each other: {', '.join(group)}",
                    f"shortest cycle: {' -> '.join(_shortest_cycle(group[0], graph, members))}",
                    *sorted(set(inside)),
                ]
            )
        )
    return problems


def layer_of(module: str, modules: Modules) -> int | None:
    """The layer LAYERS puts a module in, or None if no prefix matches."""
    is_package = module in modules and modules[module][0].name == "__init__.py"
    name = f"{module}.__init__" if is_package else module
    matches = [
        (len(prefix), number)
        for number, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if _within(name, prefix)
    ]
    return max(matches)[1] if matches else None


def _layer_problem(source: str, target: str, modules: Modules) -> str | None:
    if _within(source, "executions.services") and _within(target, "executions.runtime"):
        return "services must never import the runtime (the runtime calls services, not the reverse)"
    source_layer, target_layer = layer_of(source, modules), layer_of(target, modules)
    if source_layer is None or target_layer is None or target_layer <= source_layer:
        return None
    return (
        f"{LAYERS[source_layer][0]} ({source_layer}) imports {LAYERS[target_layer][0]} ({target_layer}), a layer above"
    )


def layer_problems(
    modules: Modules, imports: Iterable[Import], exceptions: Mapping[tuple[str, str], str] = EXCEPTIONS
) -> list[str]:
    problems = [
        f"module {name} has no layer: add it to LAYERS" for name in sorted(modules) if layer_of(name, modules) is None
    ]
    for imp in imports:
        if imp.target not in modules:
            problems.append(f"{_edge(imp)}: there is no module {imp.target} (moved or deleted?)")
            continue
        problem = _layer_problem(imp.source, imp.target, modules)
        if problem and (imp.source, imp.target) not in exceptions:
            problems.append(f"{_edge(imp)}: {problem}")
    return problems


def _tenants_problem(source: str, target: str) -> str | None:
    if _within(source, "tenants") and _within(target, "executions"):
        return "tenants must not import executions (executions builds on tenants, not the reverse)"
    return None


def tenants_problems(imports: Iterable[Import], exceptions: Mapping[tuple[str, str], str] = EXCEPTIONS) -> list[str]:
    return [
        f"{_edge(imp)}: {problem}"
        for imp in imports
        if (problem := _tenants_problem(imp.source, imp.target)) and (imp.source, imp.target) not in exceptions
    ]


def uncommented_local_imports(imports: Iterable[Import]) -> list[str]:
    problems = (
        f"{imp.path}:{imp.line}: import inside a {imp.scope} without a comment saying why"
        for imp in imports
        if imp.scope != "module" and not imp.commented
    )
    return list(dict.fromkeys(problems))  # one line per statement, however many modules it imports


def stale_exceptions(
    modules: Modules, imports: Iterable[Import], exceptions: Mapping[tuple[str, str], str]
) -> list[str]:
    edges = {(imp.source, imp.target) for imp in imports}
    problems = []
    for (source, target), reason in exceptions.items():
        if not reason.strip():
            problems.append(f"{source} -> {target}: give the reason it is allowed")
        if (source, target) not in edges:
            problems.append(f"{source} -> {target}: no longer imported; remove it from EXCEPTIONS")
        elif not (_layer_problem(source, target, modules) or _tenants_problem(source, target)):
            problems.append(f"{source} -> {target}: allowed by the rules anyway; remove it from EXCEPTIONS")
    return problems


def _fail_on(problems: list[str], title: str, advice: str) -> None:
    if problems:
        pytest.fail(f"{title}: {len(problems)}. {advice}\n" + "\n".join(problems), pytrace=False)


# The checks on the repository ------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository() -> Modules:
    return read_repository()


@pytest.fixture(scope="module")
def repository_imports(repository: Modules) -> list[Import]:
    return parse_imports(repository)


def test_the_whole_repository_is_read(repository: Modules, repository_imports: list[Import]) -> None:
    assert len(repository) >= 50, f"only {len(repository)} modules found under {', '.join(PACKAGES)}"
    assert len(repository_imports) >= 100, f"only {len(repository_imports)} imports of project modules found"
    shadowed = [
        f"{path.relative_to(ROOT)} is never imported: the package {path.with_suffix('').relative_to(ROOT)}/ shadows it"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if (path.with_suffix("") / "__init__.py").exists()
    ]
    _fail_on(shadowed, "Modules shadowed by a package", "Python imports the package: delete or rename the module.")


def test_no_import_cycles(repository_imports: list[Import]) -> None:
    _fail_on(
        cycle_problems(repository_imports),
        "Import cycles",
        "Modules that import each other cannot be loaded, tested or moved alone: break each cycle by moving code down.",
    )


def test_imports_point_down_or_sideways(repository: Modules, repository_imports: list[Import]) -> None:
    _fail_on(
        layer_problems(repository, repository_imports),
        "Imports that break the layers",
        "A module may import only from its own layer and the layers below (LAYERS in tests/test_layers.py).",
    )


def test_tenants_never_imports_executions(repository_imports: list[Import]) -> None:
    _fail_on(
        tenants_problems(repository_imports),
        "Imports of executions from tenants",
        "Tenants must work without executions: have executions pass in what tenants needs.",
    )


def test_imports_inside_functions_say_why(repository: Modules) -> None:
    _fail_on(
        uncommented_local_imports(parse_all_imports(repository)),
        "Imports inside a function or class without a comment",
        "Move each to the top of its file, or say why it is not there in a comment on its line or the line above.",
    )


def test_every_exception_is_still_needed(repository: Modules, repository_imports: list[Import]) -> None:
    _fail_on(
        stale_exceptions(repository, repository_imports, EXCEPTIONS),
        "Stale entries in EXCEPTIONS",
        "An exception must name an import that still exists and that the rules forbid.",
    )


# The checks on made-up trees, to prove they catch what they should ----------------------------

# Each problem this tree has is on purpose, and named in the comment above its file.
BAD_TREE = {
    "executions/__init__.py": "",
    "executions/kernel/__init__.py": "from .graph import Graph\n",
    # Upward: the kernel (0) imports the models (2). The TYPE_CHECKING import never runs.
    "executions/kernel/graph.py": textwrap.dedent(
        """\
        from typing import TYPE_CHECKING
        from executions.models import Execution
        if TYPE_CHECKING:
            from executions.api import View
        """
    ),
    "executions/models.py": "",
    # A cycle: selectors and catalog import each other.
    "executions/selectors.py": "import executions.catalog\n",
    "executions/catalog.py": "from . import selectors\n",
    # Services import the runtime; stop() imports inside a function without saying why.
    "executions/services.py": textwrap.dedent(
        """\
        def start():
            # Lazy: the runtime loads every blueprint.
            from executions.runtime import loop

        def stop():
            from .kernel import graph
        """
    ),
    "executions/runtime/__init__.py": "",
    "executions/runtime/loop.py": "from ..kernel import graph\n",
    # No layer, and imports a module that does not exist.
    "executions/stray.py": "import executions.streaming\n",
    "tenants/__init__.py": "",
    # Tenants imports executions (down a layer, so only the tenants rule catches it).
    "tenants/services.py": "from executions.models import Execution\n",
}


@pytest.fixture
def bad_tree() -> Modules:
    return modules_from_files(BAD_TREE)


def test_imports_are_resolved_to_modules(bad_tree: Modules) -> None:
    edges = {(imp.source, imp.target, imp.line, imp.scope) for imp in parse_imports(bad_tree)}
    assert edges == {
        ("executions.kernel", "executions.kernel.graph", 1, "module"),  # relative, from a package's __init__
        ("executions.kernel.graph", "executions.models", 2, "module"),  # a name from a module: the module
        ("executions.selectors", "executions.catalog", 1, "module"),
        ("executions.catalog", "executions.selectors", 1, "module"),  # `from . import x`, x a submodule
        ("executions.services", "executions.runtime.loop", 3, "function"),
        ("executions.services", "executions.kernel.graph", 6, "function"),
        ("executions.runtime.loop", "executions.kernel.graph", 1, "module"),  # two levels up
        ("executions.stray", "executions.streaming", 1, "module"),
        ("tenants.services", "executions.models", 1, "module"),
    }


@pytest.mark.parametrize("package_first", [True, False])
def test_a_package_shadows_a_module_of_the_same_name(package_first: bool) -> None:
    files = [("executions/live/__init__.py", "package"), ("executions/live.py", "module")]
    tree = modules_from_files(dict(files if package_first else files[::-1]))
    assert tree == {"executions.live": (Path("executions/live/__init__.py"), "package")}


def test_a_cycle_is_reported(bad_tree: Modules) -> None:
    assert cycle_problems(parse_imports(bad_tree)) == [
        "2 modules import each other: executions.catalog, executions.selectors\n"
        "  shortest cycle: executions.catalog -> executions.selectors -> executions.catalog\n"
        "  executions.catalog -> executions.selectors (line 1)\n"
        "  executions.selectors -> executions.catalog (line 1)"
    ]


def test_upward_imports_and_modules_without_a_layer_or_missing_are_reported(bad_tree: Modules) -> None:
    assert layer_problems(bad_tree, parse_imports(bad_tree), exceptions={}) == [
        "module executions.stray has no layer: add it to LAYERS",
        "executions.kernel.graph -> executions.models (line 2): kernel (0) imports models (2), a layer above",
        "executions.services -> executions.runtime.loop (line 3): services must never import the runtime "
        "(the runtime calls services, not the reverse)",
        "executions.stray -> executions.streaming (line 1): there is no module executions.streaming (moved or deleted?)",
    ]


def test_tenants_importing_executions_is_reported(bad_tree: Modules) -> None:
    assert tenants_problems(parse_imports(bad_tree), exceptions={}) == [
        "tenants.services -> executions.models (line 1): tenants must not import executions "
        "(executions builds on tenants, not the reverse)"
    ]


def test_an_import_inside_a_function_without_a_comment_is_reported(bad_tree: Modules) -> None:
    assert uncommented_local_imports(parse_imports(bad_tree)) == [
        "executions/services.py:6: import inside a function without a comment saying why"
    ]


def test_exceptions_allow_an_import_and_go_stale(bad_tree: Modules) -> None:
    imports = parse_imports(bad_tree)
    needed = {("executions.kernel.graph", "executions.models"): "the kernel's tests build executions"}
    assert not any("executions.kernel.graph ->" in problem for problem in layer_problems(bad_tree, imports, needed))
    assert stale_exceptions(bad_tree, imports, needed) == []

    stale = {
        ("executions.models", "executions.kernel"): "once needed",
        ("executions.selectors", "executions.catalog"): "sideways, so never needed",
    }
    assert stale_exceptions(bad_tree, imports, stale) == [
        "executions.models -> executions.kernel: no longer imported; remove it from EXCEPTIONS",
        "executions.selectors -> executions.catalog: allowed by the rules anyway; remove it from EXCEPTIONS",
    ]


def test_a_tree_that_keeps_the_rules_passes() -> None:
    tree = modules_from_files(
        {
            "executions/__init__.py": "",
            "executions/kernel.py": "",
            "executions/models.py": "from executions.kernel import Graph\n",
            "executions/live/__init__.py": "from executions import models\n",
            # executions.live is data (3), but executions.live.sse is an interface (5).
            "executions/live/sse.py": "from executions.services import start\n",
            "executions/services.py": textwrap.dedent(
                """\
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from executions.live.sse import stream  # upward and circular, but never runs
                def start():
                    from executions.live import publish  # lazy: publishing loads the channel layer
                """
            ),
            "executions/runtime.py": "from executions.services import start\n",
            "tenants/__init__.py": "",
            "tenants/models.py": "",
        }
    )
    imports = parse_imports(tree)
    assert len(imports) == 5
    assert cycle_problems(imports) == []
    assert layer_problems(tree, imports, exceptions={}) == []
    assert tenants_problems(imports, exceptions={}) == []
    assert uncommented_local_imports(imports) == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("executions.kernel.graph_run", 0),
        ("executions.kernel_bridge", None),  # a prefix matches whole names only
        ("executions.live", 3),
        ("executions.live.sse", 5),  # the longest prefix wins
        ("executions.live.sse.frames", 5),
        ("enact_platform.settings", 1),
        ("enact_platform.api.urls", 5),
        ("executions", 5),  # the package's own __init__.py
        ("executions.stray", None),  # "executions" names the __init__.py only, not the whole package
    ],
)
def test_layer_of(module: str, layer: int | None) -> None:
    tree = modules_from_files({"executions/__init__.py": "", "executions/live/__init__.py": ""})
    assert layer_of(module, tree) == layer
