"""Every node of a run config against what the code it configures declares (gan_lab.arguments).

A ``_target_`` node's keys must be parameters of its target and each value must fit the
parameter's type hint and declared range; a node typed by a schema dataclass is checked against
its fields the same way. A failure is a ``ConfigError`` naming the key a user sets.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from gan_lab.arguments import Parameters, parameters, violation
from gan_lab.errors import ConfigError


def target_of(cfg: DictConfig, key: str) -> Any | None:
    """The class (or function) the ``_target_`` of node ``key`` names; None for an empty node.

    Rules read what a part declares about itself (class attributes), never its name.
    """
    node = OmegaConf.select(cfg, key) if key else cfg
    if not isinstance(node, DictConfig) or not node.get("_target_"):
        return None
    try:
        return get_object(node._target_)
    except Exception as err:  # hydra's message spans lines and embeds a traceback
        raise ConfigError(
            f"{key}._target_", node._target_, "cannot be imported: give a module.Class path"
        ) from err


def _schema_at(root: type, key: str) -> type | None:
    """The schema dataclass of node ``key`` under the ``root`` schema (gan_lab.config.RunConfig:
    the root, ``train``, ``resume``), found from the key, so that the untyped config a
    checkpoint stores is checked alike."""
    schema: Any = root
    for part in filter(None, key.split(".")):
        hint = typing.get_type_hints(schema).get(part)
        members = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        schema = members[0] if len(members) == 1 else None
        if not dataclasses.is_dataclass(schema):
            return None
    return schema


def _declarations(cfg: DictConfig, root: type, key: str) -> Parameters | None:
    """What node ``key`` may hold: its ``_target_``'s parameters, or the fields of its schema
    dataclass; None for a plain node."""
    target = target_of(cfg, key)
    if target is not None:
        return parameters(target)
    schema = _schema_at(root, key)
    if schema is None:
        return None
    fields = Parameters(typing.get_type_hints(schema, include_extras=True))
    fields.open = True  # keys the schema lacks: OmegaConf refuses them where the config is typed
    return fields


_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def _source(raw: Any, key: str) -> str:
    """The key a user sets for this value: ``eval.every_n_iterations`` for a node holding
    ``${eval.every_n_iterations}``, else ``key`` itself."""
    match = _REFERENCE.fullmatch(raw) if isinstance(raw, str) else None
    return match.group(1) if match else key


def _builds_object(value: Any) -> bool:
    # A nested `_target_` node becomes an object when instantiated: it is checked as a node.
    if isinstance(value, DictConfig):
        return bool(value.get("_target_"))
    return isinstance(value, ListConfig) and any(_builds_object(item) for item in value)


def check_nodes(
    cfg: DictConfig, schema: type, key: str = "", node: DictConfig | None = None
) -> None:
    """Every node of ``cfg`` against what it declares (gan_lab.arguments): each key of a
    ``_target_`` node must be a parameter of the target, each value its type hint and declared
    range; the fields of schema dataclasses likewise. The error names the key a user sets."""
    node = cfg if node is None else node
    declared = _declarations(cfg, schema, key)
    raw = OmegaConf.to_container(node, resolve=False)
    for name, raw_value in raw.items():
        if not isinstance(name, str) or (name.startswith("_") and name.endswith("_")):
            continue
        child = f"{key}.{name}" if key else name
        if child == "hydra":
            continue
        if declared is not None:
            _check_value(cfg, node, declared, name, child, raw_value)
        if isinstance(raw_value, dict):  # a node of its own (an interpolated one is a string)
            check_nodes(cfg, schema, child, node[name])


def _check_value(
    cfg: DictConfig, node: DictConfig, declared: Parameters, name: str, key: str, raw: Any
) -> None:
    if name not in declared:
        if declared.open:
            return
        target = target_of(cfg, key.rpartition(".")[0])
        raise ConfigError(
            key,
            node[name],
            f"{target.__qualname__} takes no argument {name!r}; it takes "
            + (", ".join(declared) or "none"),
        )
    if raw == "???":
        raise ConfigError(key, raw, "must be set: add it on the command line, key=value")
    value = node[name]
    if _builds_object(value) or (value is None and name in declared.foreign):
        return
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    rule = violation(value, declared[name])
    if rule is not None:
        raise ConfigError(_source(raw, key), value, rule)
