"""The layering rules of docs/architecture.md, read from the imports with ``ast``.

Nothing of the package is imported or run: each module's import statements (at the top,
inside functions and under ``TYPE_CHECKING`` alike) are read from its source. A rule that
fails names the module, the line and the rule, so the fix is where the message points.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "secir_bot"

# Libraries that only one part of the package may use (top-level import names).
STORE_ONLY = {"sqlite3", "sqlite_utils"}
CRYPTO_ONLY = {"gnupg"}
CHANNEL_ONLY = {"nio", "vodozemac", "aioimaplib", "aiosmtplib"}
# What the bridges must never reach up to: the deciding and the command machinery.
ABOVE_THE_BRIDGES = (
    "pipeline",
    "steps",
    "posts",
    "fanout",
    "relay",
    "inbox",
    "runner",
    "listmail",
    "commands",
)
# Ways of starting another program: only the crypto package runs one (gpg), and the sandbox
# (throwaway servers).
PROCESS_CALLS = {"create_subprocess_exec", "create_subprocess_shell", "system", "popen"}


@dataclass(frozen=True)
class Use:
    """One import (or process start) in one module."""

    module: str  # the importing module, e.g. secir_bot.steps.email
    line: int
    target: str  # the module imported, resolved to a module of the package when it is one


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(target: str) -> str:
    """The package module that ``target`` names (``a.b.Name`` -> ``a.b``), else itself."""
    probe = target
    while probe and probe not in MODULES:
        probe = probe.rpartition(".")[0]
    return probe or target


def uses_of(name: str) -> list[Use]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Use] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [Use(name, node.lineno, _resolve(a.name)) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from a import b`` imports ``a`` first, and ``a.b`` when that is a module.
            out.append(Use(name, node.lineno, _resolve(base)))
            out += [
                Use(name, node.lineno, f"{base}.{a.name}")
                for a in node.names
                if f"{base}.{a.name}" in MODULES
            ]
        elif isinstance(node, ast.Attribute) and node.attr in PROCESS_CALLS:
            out.append(Use(name, node.lineno, f"<process:{node.attr}>"))
    return out


USES = [use for name in MODULES for use in uses_of(name)]


def inside(module: str, part: str) -> bool:
    """Whether ``module`` is ``secir_bot.<part>`` or a module below it."""
    full = f"secir_bot.{part}"
    return module == full or module.startswith(full + ".")


def top(module: str) -> str:
    return module.split(".")[0]


def broken(rule: str, offenders: list[Use]) -> str:
    lines = [f"{u.module} line {u.line}: imports {u.target}" for u in offenders]
    return f"{rule}:\n  " + "\n  ".join(lines)


def test_the_package_is_read() -> None:
    # A guard against a rule passing because nothing was looked at.
    assert "secir_bot.store" in MODULES and "secir_bot.steps.email" in MODULES
    assert any(u.target == "secir_bot.store" for u in USES)


def test_only_the_store_uses_sqlite() -> None:
    bad = [u for u in USES if top(u.target) in STORE_ONLY and not inside(u.module, "store")]
    assert not bad, broken("only secir_bot/store/ imports sqlite3 or sqlite-utils", bad)


def test_only_crypto_uses_gnupg_and_starts_gpg() -> None:
    bad = [u for u in USES if top(u.target) in CRYPTO_ONLY and not inside(u.module, "crypto")]
    assert not bad, broken("only secir_bot/crypto/ imports gnupg", bad)
    starts = [
        u
        for u in USES
        if (u.target == "subprocess" or u.target.startswith("<process:"))
        and not inside(u.module, "crypto")
        and not inside(u.module, "sandbox")
    ]
    assert not starts, broken("only secir_bot/crypto/ (and the sandbox) start programs", starts)


def test_only_the_bridges_talk_to_matrix_and_mail_servers() -> None:
    bad = [
        u
        for u in USES
        if top(u.target) in CHANNEL_ONLY
        and not inside(u.module, "bridges")
        and not inside(u.module, "sandbox")
    ]
    assert not bad, broken(
        "only secir_bot/bridges/ (and the sandbox) import " + ", ".join(sorted(CHANNEL_ONLY)), bad
    )


def test_the_bridges_never_reach_up_into_deciding() -> None:
    bad = [
        u
        for u in USES
        if inside(u.module, "bridges") and any(inside(u.target, p) for p in ABOVE_THE_BRIDGES)
    ]
    assert not bad, broken("secir_bot/bridges/ never import " + ", ".join(ABOVE_THE_BRIDGES), bad)


def test_the_steps_never_import_a_bridge() -> None:
    bad = [u for u in USES if inside(u.module, "steps") and inside(u.target, "bridges")]
    assert not bad, broken("secir_bot/steps/ never import secir_bot/bridges/", bad)


def test_nothing_but_the_cli_imports_the_sandbox() -> None:
    bad = [
        u
        for u in USES
        if inside(u.target, "sandbox")
        and not inside(u.module, "sandbox")
        and u.module != "secir_bot.cli"
    ]
    assert not bad, broken("only secir_bot/cli.py imports secir_bot/sandbox/", bad)


def _graph(level: str) -> dict[str, set[str]]:
    """Imports between the package's modules, or between its top-level parts."""

    def node(module: str) -> str:
        if level == "module":
            return module
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    graph: dict[str, set[str]] = {node(m): set() for m in MODULES}
    for u in USES:
        if u.target in MODULES and node(u.target) != node(u.module):
            graph[node(u.module)].add(node(u.target))
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_circles(level: str) -> None:
    circles = _circles(_graph(level))
    assert not circles, f"{level} import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
