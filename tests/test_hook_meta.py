"""Every hook spec is tested and documented (in the manner of datasette's plugin meta-tests):
a hook added without a ``test_hook_<name>...`` test and an entry in docs/plugins.md with its
exact signature fails here. Every registration rule is documented too."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from walrus_core import hookspecs
from walrus_core.contract import RULES, SPEC_PARAMETERS

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "plugins.md"
TEST_DIRS = (ROOT / "tests", ROOT / "walrus_core" / "testing")

HOOKS = sorted(SPEC_PARAMETERS)


def _test_function_names() -> set[str]:
    names: set[str] = set()
    for directory in TEST_DIRS:
        for path in directory.glob("test_*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                    names.add(node.name)
    return names


def signature_line(name: str) -> str:
    """``def name(param: annotation, ...) -> return`` as written in hookspecs.py."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


def test_the_specs_are_the_hooks_the_contract_checks() -> None:
    marked = {
        name
        for name, fn in vars(hookspecs).items()
        if callable(fn) and getattr(fn, hookspecs.PROJECT + "_spec", None) is not None
    }
    assert marked == set(HOOKS)
    assert "walrus_write" in HOOKS and "walrus_open" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    tests = sorted(n for n in _test_function_names() if n.startswith(f"test_hook_{hook}"))
    assert tests, f"no test named test_hook_{hook}_... in tests/ or walrus_core/testing/"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_exact_signature(hook: str) -> None:
    line = signature_line(hook)
    assert line in GUIDE.read_text(), f"docs/plugins.md lacks the line: {line}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_parameter_is_described_in_its_spec(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    for param in SPEC_PARAMETERS[hook]:
        assert f":param {param}:" in doc, f"{hook}'s docstring does not describe {param}"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_registration_rule_is_documented(rule: str) -> None:
    assert f"`{rule}`" in GUIDE.read_text(), f"docs/plugins.md does not explain rule {rule}"


def test_the_signature_line_is_built_from_the_source() -> None:
    assert signature_line("walrus_read") == (
        "def walrus_read(handle: Any, offset: int, size: int) -> bytes"
    )
