"""The three floors, held by a test: cli on top, one package per command, a core that knows no
command. `layout_problems` reads every module with `ast` (imports inside functions count too)
and names the file, line and import of every break of the rules below; the second test feeds
it a small bad tree to show that it catches each kind.

Rules:
- nothing in acr/core imports acr.commands or acr.cli;
- a command (and the CLI) uses another command only through the names in that package's
  `__all__` (imported from the package itself, never from its modules);
- no module imports a `_private` name from another acr module;
- only acr/core/models.py imports audiocraft.models (loaders, builders, MusicGen, ...);
- the import graph between acr modules has no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the `acr` package under `root`."""
    out = {}
    for path in sorted((root / "acr").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, is_package: bool):
    """(line, imported module, names taken from it) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module, [alias.name for alias in node.names]


def _public_names(path: Path) -> set[str]:
    """A command package's `__all__` (its entry points)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _command_of(module: str) -> str | None:
    """acr.commands.<name>[...] -> acr.commands.<name>; None outside the commands floor."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[:2] == ["acr", "commands"] and len(parts) >= 3 else None


def layout_problems(root: Path) -> list[str]:
    modules = _modules(root)
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        where = path.relative_to(root).as_posix()
        is_package = path.name == "__init__.py"
        for line, module, names in _imports(path, name, is_package):
            spot = f"{where}:{line}: imports {module}" + (f" ({', '.join(names)})" if names
                                                          else "")
            # which acr modules this import reaches
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            if module in modules and len(targets) < len(names or [None]):
                targets.append(module)
            for target in targets:
                if target != name:
                    graph[name].add(target)
            if module == "audiocraft.models" or module.startswith("audiocraft.models.") or \
                    (module == "audiocraft" and "models" in names):
                if name != "acr.core.models":
                    problems.append(f"{spot}: only acr/core/models.py may import "
                                    "audiocraft.models")
            if not module.startswith("acr"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{spot}: private name(s) {', '.join(private)} cross a module")
            if name.startswith("acr.core") and (module.startswith("acr.commands") or
                                                module == "acr.cli"):
                problems.append(f"{spot}: core must not import commands or the CLI")
            mine, theirs = _command_of(name), _command_of(module)
            if theirs is None or theirs == mine or name.startswith("acr.core"):
                continue
            if module != theirs:
                problems.append(f"{spot}: reaches into another command's internals; import "
                                f"its entry points from {theirs}")
            elif modules[theirs].name == "__init__.py":
                hidden = [n for n in names if n not in _public_names(modules[theirs])]
                if hidden:
                    problems.append(f"{spot}: {', '.join(hidden)} not in {theirs}.__all__ "
                                    "(a command's entry points)")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component of more
    than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        members, path = set(component), [component[0]]
        while True:  # walk inside the component until a module repeats
            nxt = sorted(graph[path[-1]] & members)[0]
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
    return cycles


def test_the_tree_keeps_the_three_floors():
    assert layout_problems(ROOT) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_each_kind_of_fault_is_caught_and_named(tmp_path):
    _write(tmp_path, {
        "acr/__init__.py": "",
        "acr/cli.py": "def main():\n    from acr.commands.alpha import run_alpha\n",
        "acr/core/__init__.py": "",
        "acr/core/runs.py": "from acr.commands.alpha import run_alpha\n",
        "acr/core/models.py": "import audiocraft.models\n",
        "acr/core/audio.py": "from acr.core.mixing import mix\n",
        "acr/core/mixing.py": "def mix():\n    from acr.core.audio import read\n",
        "acr/commands/__init__.py": "",
        "acr/commands/alpha/__init__.py": "from acr.commands.alpha.run import run_alpha\n"
                                          "__all__ = ['run_alpha']\n",
        "acr/commands/alpha/run.py": "def run_alpha():\n    pass\n\n\ndef _helper():\n    pass\n",
        "acr/commands/beta/__init__.py": "__all__ = []\n",
        "acr/commands/beta/run.py": "from acr.commands.alpha.run import run_alpha\n"
                                    "from acr.commands.alpha import run_alpha, secret\n"
                                    "from acr.commands.alpha.run import _helper\n",
        "acr/commands/beta/gen.py": "from audiocraft.models import MusicGen\n"
                                    "from audiocraft import models\n",
    })
    problems = layout_problems(tmp_path)
    expected = [
        "acr/core/runs.py:1: imports acr.commands.alpha (run_alpha): core must not import "
        "commands or the CLI",
        "acr/commands/beta/run.py:1: imports acr.commands.alpha.run (run_alpha): reaches into "
        "another command's internals; import its entry points from acr.commands.alpha",
        "acr/commands/beta/run.py:2: imports acr.commands.alpha (run_alpha, secret): secret not "
        "in acr.commands.alpha.__all__ (a command's entry points)",
        "acr/commands/beta/run.py:3: imports acr.commands.alpha.run (_helper): private name(s) "
        "_helper cross a module",
        "acr/commands/beta/run.py:3: imports acr.commands.alpha.run (_helper): reaches into "
        "another command's internals; import its entry points from acr.commands.alpha",
        "acr/commands/beta/gen.py:1: imports audiocraft.models (MusicGen): only "
        "acr/core/models.py may import audiocraft.models",
        "acr/commands/beta/gen.py:2: imports audiocraft (models): only acr/core/models.py may "
        "import audiocraft.models",
        "import cycle: acr.core.audio -> acr.core.mixing -> acr.core.audio",
    ]
    for line in expected:
        assert line in problems, (line, problems)
    # the allowed imports raise nothing: the CLI and commands through __all__, core/models.py
    assert not [p for p in problems if p.startswith(("acr/cli.py", "acr/core/models.py"))]
    assert len(problems) == len(expected)
