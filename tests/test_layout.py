"""The layout rules of docs/design.md, checked on the source: builders live in gan_lab.build and
the CLI module exports none; behaviour never hangs on a class name or a ``_target_`` string."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

import pytest
import yaml

from gan_lab.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gan_lab"
SOURCES = sorted(
    [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
)
# What the CLI module offers: the entry point and the run orchestration it performs.
TRAIN_EXPORTS = {"main", "train", "fit", "run", "Run"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_train_module_defines_no_builders() -> None:
    defined = {
        node.name
        for node in _tree(PACKAGE / "train.py").body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    assert defined <= TRAIN_EXPORTS | {"_finish_wandb", "_report", "_TrainModule"}, defined


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_builders_from_the_cli(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module == "gan_lab.train":
            names = {alias.name for alias in node.names}
            assert names <= TRAIN_EXPORTS, f"{path.name}: imports {names - TRAIN_EXPORTS}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("build_"):
            # `train.build_module` after `import gan_lab.train as train`
            owner = node.value
            assert not (isinstance(owner, ast.Name) and owner.id == "train"), path.name


# "WassersteinLoss", "RunMode.MULTIRUN": a class's name spelled as text.
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*(\.[A-Za-z_]\w*)?")


def _names_a_class(node: ast.AST) -> bool:
    """``x.__name__``, ``x.__class__``, a ``_target_`` lookup or a class name as a string."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
            if CLASS_NAME.fullmatch(inner.value):
                return True
        if isinstance(inner, ast.Attribute) and inner.attr in (
            "__name__",
            "__class__",
            "__qualname__",
            "_target_",
        ):
            return True
        if isinstance(inner, ast.Constant) and inner.value == "_target_":
            return True
    return False


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_behaviour_decided_by_class_names(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            # Parts declare what they are (class attributes); sniffing for one is not dispatch.
            assert node.func.id != "hasattr", f"{path.name}:{node.lineno} uses hasattr"
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            # `__name__ == "__main__"` is the one compare of a name Python itself asks for.
            if any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides):
                continue
            assert not any(_names_a_class(s) for s in sides), (
                f"{path.name}:{node.lineno} compares a class name or _target_ string"
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
        ):
            assert not any(_names_a_class(arg) for arg in node.args), (
                f"{path.name}:{node.lineno} matches a regex on a class name"
            )


def test_gan_module_takes_a_few_typed_objects() -> None:
    from gan_lab.gan_module import GANModule

    parameters = list(inspect.signature(GANModule.__init__).parameters.values())[1:]
    assert len(parameters) <= 4, [p.name for p in parameters]
    hints = typing.get_type_hints(GANModule.__init__)
    assert all(p.name in hints and hints[p.name] is not typing.Any for p in parameters), hints


def test_run_scalars_have_one_home() -> None:
    """gan_lab/conf/train.yaml holds the defaults list only; every run scalar's default is the
    schema's."""
    root = yaml.safe_load((CONF_DIR / "train.yaml").read_text())
    assert set(root) == {"defaults"}, set(root)
