"""Typed data from plain data: attrs classes built from dicts (``structure``) and back
(``unstructure``), with one-line errors that name the full key; YAML read safely (config files are
data, not code: no tags, no alias bombs) and written. The run config (``lccore.config``) and the
plugins' options (``lccore.plugins``) are both built with it.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import attrs
import yaml

from .errors import ConfigError, close_matches


def doc(text: str, **kwargs):
    return {"doc": text, **kwargs}


# --- mapping plain data onto attrs classes ------------------------------------------------------


def structure(cls, data: Any, key: str = ""):
    """Build ``cls`` from plain data, checking names and types; errors name the full key."""
    if isinstance(data, str) and "name" in attrs.fields_dict(cls):
        data = {"name": data}  # `task: text_classification` is short for `task: {name: ...}`
    if isinstance(data, str) and "strategy" in attrs.fields_dict(cls):
        data = {"strategy": data}  # `freeze: head_only`
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {_describe(data)}")
    fields = attrs.fields_dict(cls)
    hints = typing.get_type_hints(cls)
    extra_field = next((f.name for f in fields.values() if f.metadata.get("extra")), None)
    known = [name for name in fields if name != extra_field]
    values, extra = {}, {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ConfigError(f"{_join(key, str(name))}: keys must be strings")
        if name in known:
            values[name] = _convert(hints[name], value, _join(key, name), fields[name].metadata)
        elif extra_field:
            extra[name] = value
        else:
            raise ConfigError(f"{_join(key, name)}: unknown key{close_matches(name, known)}")
    if extra_field:
        values[extra_field] = extra
    for name, field in fields.items():
        if name not in values and field.default is attrs.NOTHING:
            raise ConfigError(f"{_join(key, name)}: missing required key")
    return cls(**values)


def unstructure(obj) -> Any:
    """attrs instance -> plain data, with component options folded back into their section."""
    if attrs.has(type(obj)):
        out = {}
        for field in attrs.fields(type(obj)):
            value = unstructure(getattr(obj, field.name))
            if field.metadata.get("extra"):
                out.update(value)
            else:
                out[field.name] = value
        return out
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    return obj


def _convert(tp, value, key: str, metadata=None):
    metadata = metadata or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        sections = [a for a in inner if attrs.has(a)]
        if isinstance(value, dict) and sections:  # `model: {architecture: ...}` rather than a name
            return structure(sections[0], value, key)
        words = [w for a in inner if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        if words:  # `lr: auto` beside a number
            if isinstance(value, str) and value in words:
                return value
            other = next(a for a in inner if typing.get_origin(a) is not Literal)
            try:
                return _convert(other, value, key, metadata)
            except ConfigError as exc:
                if "expected" not in str(exc):  # out of bounds: that message says what is allowed
                    raise
                expected, got = str(exc).split(", got ", 1)  # "key: expected a finite number", "nan"
                raise ConfigError(f"{expected} or {' or '.join(map(str, words))}, got {got}"
                                  f"{close_matches(value, words) if isinstance(value, str) else ''}") from None
        lists = [a for a in inner if typing.get_origin(a) is list]
        if isinstance(value, list) and lists:  # `train: [a.txt, b.txt]` rather than one file
            return _convert(lists[0], value, key, metadata)
        return _convert(inner[0], value, key, metadata)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}{close_matches(value, args)}")
        return value
    if attrs.has(tp):
        return structure(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        return [_convert(args[0] if args else Any, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        if abs(value) >= 1 << 63:  # past what torch, numpy and the tokenizers take
            raise ConfigError(f"{key}: {value} is out of range (at most 2**63 - 1 in size)")
    elif tp is float:
        if isinstance(value, str):  # YAML reads 5e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return value
    if "min" in metadata and value < metadata["min"]:
        raise ConfigError(f"{key}: must be at least {metadata['min']}, got {value}")
    if "max" in metadata and value > metadata["max"]:
        raise ConfigError(f"{key}: must be at most {metadata['max']}, got {value}")
    return value



def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{value!r}"


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# --- YAML files ---------------------------------------------------------------------------------


#: Most nodes a YAML document may expand to once its aliases are followed: far more than any
#: config holds, far less than an alias bomb ("billion laughs") asks for.
MAX_YAML_NODES = 100_000


def safe_load_yaml(text: str, origin: str = "YAML", *, max_nodes: int = MAX_YAML_NODES):
    """``yaml.safe_load`` that refuses, in one line naming ``origin``, a document whose aliases
    expand to more than ``max_nodes`` nodes anywhere in it, or that refer to themselves; the
    check runs on the composed node graph, before anything is built from it."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node, origin, max_nodes)
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{origin}{where}: invalid YAML: {problem}") from None
        except RecursionError:  # PyYAML composes and builds recursively
            raise ConfigError(f"{origin}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _check_expansion(root, origin: str, max_nodes: int) -> None:
    """Count the nodes of ``root`` with every alias expanded (each shared node counted once per
    use), without building them; a node that contains itself is refused."""
    def children(node):
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return node.value if isinstance(node, yaml.SequenceNode) else []

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:  # depth first, without recursion: a deeply nested document cannot overflow the stack
        node, finished = stack.pop()
        if finished:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children(node))
            if sizes[id(node)] > max_nodes:
                raise ConfigError(f"{origin}:{node.start_mark.line + 1}: YAML aliases expand to more than {max_nodes} values (an alias bomb?)")
            continue
        if id(node) in sizes:
            continue
        on_path.add(id(node))
        stack.append((node, True))
        for child in children(node):
            if id(child) in on_path:
                raise ConfigError(f"{origin}:{child.start_mark.line + 1}: a YAML alias refers to a value that contains it (recursive)")
            if id(child) not in sizes:
                stack.append((child, False))


def read_yaml(path: str | Path) -> dict:
    """Safe-load a YAML mapping; errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    data = safe_load_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {_describe(data)}")
    return data


def dump_yaml(data: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
