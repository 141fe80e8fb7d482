"""What a config node may hold, read from the code it configures.

A node with a ``_target_`` holds arguments of that class or function: their names come from its
signature (through ``**kwargs`` to the base classes it forwards them to), their types and
ranges from its type hints. A range is declared in the hint with an annotated-types constraint,
``every: Annotated[int, Ge(1)]`` or one of the aliases below; a node typed by a schema dataclass
(``gan_lab.config``) declares its fields the same way. gan_lab.validation checks every node of a
run's config against these declarations, so a new option is validated by its type hint alone.

Values are checked with pydantic (lax mode: an int passes for a float); a hint it cannot check
(an arbitrary class without a schema) is left to the constructor, whose errors gan_lab.build
reports under the node's key.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Interval, Le, Lt
from pydantic import ConfigDict, TypeAdapter, ValidationError

# Ranges that recur; a class may write its own ``Annotated[float, Interval(gt=0, le=1)]``.
Count = Annotated[int, Ge(1)]  # sizes, intervals in iterations, sample counts
NonNegativeInt = Annotated[int, Ge(0)]
Positive = Annotated[float, Gt(0)]  # scales, standard deviations, learning rates
NonNegative = Annotated[float, Ge(0)]  # weights of a penalty, noise levels
Dropout = Annotated[float, Interval(ge=0, lt=1)]  # a probability of dropping (1 drops all)
Fraction = Annotated[float, Interval(ge=0, le=1)]

__all__ = [
    "Count",
    "Dropout",
    "Fraction",
    "Ge",
    "Gt",
    "Interval",
    "Le",
    "Lt",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "Parameters",
    "describe",
    "parameters",
    "violation",
]


class Parameters(dict[str, Any]):
    """Name -> type hint (``inspect.Parameter.empty`` where there is none) of what a target
    accepts; ``open`` when it also takes any other keyword (a ``**kwargs`` nobody names).

    ``foreign`` names the parameters another library declares: their hints often leave out
    the None they accept (Lightning's ``max_steps: int``), so null always passes there.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.open = False
        self.foreign: set[str] = set()


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    """``function``'s evaluated type hints, each one alone where some cannot be evaluated
    (a name imported only for type checkers): an unreadable hint checks nothing."""
    function = inspect.unwrap(function)
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001 - any failure to evaluate means "no hint"
        pass
    names = getattr(function, "__globals__", {})
    hints = {}
    for name, hint in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = eval(hint, names) if isinstance(hint, str) else hint  # noqa: S307
        except Exception:  # noqa: BLE001
            continue
    return hints


_OWN_PACKAGE = __name__.partition(".")[0]


def _package(obj: Any) -> str:
    return getattr(obj, "__module__", "").partition(".")[0]


def _signature_chain(target: Any) -> list[Callable[..., Any]]:
    """The functions whose parameters ``target`` accepts: for a class, its ``__init__`` and,
    while each forwards ``**kwargs``, the ``__init__`` of the next base that defines one.

    Only bases from gan_lab are followed: its classes forward ``**kwargs`` to their base by
    convention (a user's subclass of one is followed into it), but another library's may pass
    them elsewhere (Lightning's DDPStrategy hands them to torch's DistributedDataParallel), so
    its ``**kwargs`` stay open.
    """
    if not isinstance(target, type):
        return [target]
    if target.__init__ is object.__init__ and target.__new__ is not object.__new__:
        # Built by __new__ (datetime.timedelta, other C types): its signature, if it has one.
        return [target.__new__]
    chain = []
    for cls in target.__mro__:
        init = vars(cls).get("__init__")
        if init is None or cls is object:
            continue
        if chain and _package(cls) != _OWN_PACKAGE:
            break
        chain.append(init)
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):
            break
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return chain


@functools.cache
def parameters(target: Any) -> Parameters:
    """What ``target`` (a class, function or bound classmethod) accepts as keywords."""
    accepted = Parameters()
    chain = _signature_chain(target)
    # A class with object's __init__ takes nothing; else open until a signature closes it.
    accepted.open = bool(chain)
    for function in chain:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check
            return accepted
        hints = _hints(function)
        for name, parameter in signature.parameters.items():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if name not in ("self", "cls") and name not in accepted:
                accepted[name] = hints.get(name, inspect.Parameter.empty)
                if _package(function) != _OWN_PACKAGE:
                    accepted.foreign.add(name)
        accepted.open = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return accepted


@functools.cache
def _adapter(hint: Any) -> TypeAdapter[Any] | None:
    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # noqa: BLE001 - a hint pydantic cannot express checks nothing
        return None


def violation(value: Any, hint: Any) -> str | None:
    """None when ``value`` fits ``hint``; else the rule it breaks, ``must be ...``."""
    if hint is inspect.Parameter.empty or hint is Any:
        return None
    try:
        adapter = _adapter(hint)
    except TypeError:  # an unhashable hint
        adapter = None
    if adapter is None:
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as error:
        text = describe(hint)
        if text is None:  # a hint too odd to describe: pydantic's own words
            text = error.errors()[0]["msg"].removeprefix("Input should be ")
        return f"must be {text}"
    return None


_BOUND_SYMBOLS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(constraints: Sequence[Any]) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)`` from annotated-types constraints."""
    bounds: dict[str, Any] = {}
    for constraint in constraints:
        for name, _ in _BOUND_SYMBOLS:
            if getattr(constraint, name, None) is not None:
                bounds[name] = getattr(constraint, name)
    low = [(name, bounds[name]) for name in ("gt", "ge") if name in bounds]
    high = [(name, bounds[name]) for name in ("lt", "le") if name in bounds]
    if low and high:
        (low_name, low_value), (high_name, high_value) = low[0], high[0]
        left, right = "(" if low_name == "gt" else "[", ")" if high_name == "lt" else "]"
        return f"in {left}{_number(low_value)}, {_number(high_value)}{right}"
    symbols = dict(_BOUND_SYMBOLS)
    return " ".join(f"{symbols[name]} {_number(value)}" for name, value in low + high)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def describe(hint: Any) -> str | None:
    """What ``hint`` admits in words (``an integer >= 1``, ``null or a number in (0, 1)``);
    None for a hint without simple words. Classes a config cannot write are left out."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *constraints = typing.get_args(hint)
        words, bounds = describe(base), _bounds(constraints)
        return f"{words} {bounds}" if words and bounds else words
    if hint in _NAMES:
        return _NAMES[hint]
    if origin is Literal:
        return "one of " + ", ".join(str(value) for value in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        # Literal members read as one list of choices (Lightning's precision: 32, "16-mixed"...).
        choices = [c for a in members if typing.get_origin(a) is Literal for c in a.__args__]
        members = [a for a in members if typing.get_origin(a) is not Literal]
        words = [w for w in map(describe, members) if w]
        if choices:
            words.append("one of " + ", ".join(dict.fromkeys(map(str, choices))))
        if not words:
            return None
        text = " or ".join(words)
        return f"null or {text}" if len(members) < len(typing.get_args(hint)) else text
    if origin in (list, tuple, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = describe(args[0]) if args else None
        return f"a list, each item {item}" if item else "a list"
    return None
