"""The YAML checker behind every config: located values, overrides, schema checks.

Each problem is one line, `FILE:LINE:COL: dotted.key: problem`. The YAML is composed into nodes
(never constructed into Python objects, so no tag can run code) and checked against a dataclass
schema whose fields carry their help text and limits in `metadata` (see `opt`). Overrides
(`--set key=value` and command-line flags) are applied to the node tree before checking, so they
are checked the same way and their problems name the flag instead of a file line. Nothing here
knows a particular schema: those live in `schema.py`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from acr.core.errors import UsageError

# ----------------------------------------------------------------------------------------------
# Documented schema fields


def opt(default: Any = MISSING, help: str = "", **checks: Any) -> Any:
    """A documented schema field. checks: gt, ge, lt, le, choices, pattern, min_items."""
    meta = {"help": help, **checks}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return field(default_factory=lambda: _copy(value), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return type(value)(value)



# ----------------------------------------------------------------------------------------------
# Located values: a YAML node tree reduced to plain values that remember where they came from


@dataclass
class Loc:
    source: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.col}" if self.line else self.source


@dataclass
class Item:
    value: Any  # dict[str, Item] | list[Item] | scalar
    loc: Loc
    plain: bool = False  # an unquoted scalar (so "3e-4" may be read as a float)
    bad: bool = False  # already reported while parsing (a forbidden tag): not checked again
    key_locs: dict[str, Loc] = field(default_factory=dict)


class Problems(list):
    def add(self, loc: Loc, path: str, message: str) -> None:
        """One line per problem; a spot already reported with the same message (a `defaults`
        key seen again through every parameter set it is merged into) is not repeated."""
        seen = getattr(self, "_seen", set())
        if (str(loc), message) in seen and loc.line:
            return
        seen.add((str(loc), message))
        self._seen = seen
        self.append(f"{loc}: {path or '(top level)'}: {message}")


_SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in
              ("str", "int", "float", "bool", "null", "seq", "map")}
_constructor = yaml.constructor.SafeConstructor()


def _to_item(node: yaml.Node, source: str, path: str, problems: Problems) -> Item:
    loc = Loc(source, node.start_mark.line + 1, node.start_mark.column + 1)
    if node.tag not in _SAFE_TAGS:
        what = "python objects cannot be loaded; acr reads YAML safely" \
            if node.tag.startswith("tag:yaml.org,2002:python/") else "only plain YAML is allowed"
        problems.add(loc, path, f"tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not "
                                f"allowed ({what}); remove it")
        return Item(None, loc, bad=True)
    if isinstance(node, yaml.MappingNode):
        out = Item({}, loc)
        for key_node, value_node in node.value:
            key_loc = Loc(source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                problems.add(key_loc, path, "keys must be plain strings")
                continue
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key in out.value:
                first = out.key_locs[key]
                problems.add(key_loc, sub, f"duplicate key (first set at line {first.line}); "
                                           "keep one")
                continue
            out.key_locs[key] = key_loc
            out.value[key] = _to_item(value_node, source, sub, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return Item([_to_item(n, source, f"{path}[{i}]", problems)
                     for i, n in enumerate(node.value)], loc)
    value = _constructor.construct_object(node, deep=True)
    return Item(value, loc, plain=node.style is None)


def parse_yaml(text: str, source: str, problems: Problems | None = None) -> Item:
    """Compose YAML text into an Item tree.

    Problems found while composing (duplicate keys, forbidden tags) are added to `problems` so
    that schema problems can be reported with them; without `problems` they raise UsageError.
    A syntax error always raises at once (nothing after it can be located).
    """
    own = problems is None
    problems = Problems() if own else problems
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        loc = Loc(source, mark.line + 1, mark.column + 1) if mark else Loc(source)
        reason = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{loc}: YAML syntax error: {reason}; fix the YAML at that position")
    if node is None:
        return Item({}, Loc(source, 1, 1))
    item = _to_item(node, source, "", problems)
    if own and problems:
        raise UsageError(*problems)
    return item


# ----------------------------------------------------------------------------------------------
# Overrides


def apply_override(root: Item, dotted: str, value: Item) -> None:
    """Set `dotted` (like params.top_k) in the tree to `value`, creating mappings as needed."""
    node = root
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.value.get(part) if isinstance(node.value, dict) else None
        if child is None or not isinstance(child.value, dict):
            child = Item({}, value.loc)
            node.value[part] = child
            node.key_locs[part] = value.loc
        node = child
    node.value[parts[-1]] = value
    node.key_locs[parts[-1]] = value.loc


def parse_set(arg: str) -> tuple[str, Item]:
    """`key.sub=value` -> (dotted key, Item); the value is read as YAML (`[a, b]`, `1e-4`, ...)."""
    source = f"--set {arg}"
    key, sep, text = arg.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key.strip()):
        raise UsageError(f"{source}: expected --set dotted.key=value, like "
                         "--set params.temperature=1.2")
    if text.strip() == "":
        raise UsageError(f"{source}: {key}: empty value; write --set {key}=null to reset it")
    item = parse_yaml(text, source)
    _relocate(item, Loc(source))
    return key.strip(), item


def _relocate(item: Item, loc: Loc) -> None:
    item.loc = loc
    if isinstance(item.value, dict):
        item.key_locs = {k: loc for k in item.value}
        for sub in item.value.values():
            _relocate(sub, loc)
    elif isinstance(item.value, list):
        for sub in item.value:
            _relocate(sub, loc)


def flag_yaml(text: str, flag: str) -> Item:
    """A flag's text read as a YAML value (`4`, `auto`), located at the flag."""
    item = parse_yaml(text, flag)
    _relocate(item, Loc(flag))
    return item


def flag_item(value: Any, flag: str) -> Item:
    """A command-line flag's value (already typed by the CLI) as an override Item."""
    if isinstance(value, (list, tuple)):
        return Item([Item(v, Loc(flag)) for v in value], Loc(flag))
    return Item(value, Loc(flag))


# ----------------------------------------------------------------------------------------------
# Checking an Item tree against a schema

_FLOAT_RE = re.compile(r"[-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else yaml.safe_dump(value).strip().removesuffix(
        "\n...").strip()


def _check_value(tp: Any, item: Item, path: str, problems: Problems, meta: dict) -> Any:
    if item.bad:
        return MISSING
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if item.value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _check_value(inner[0], item, path, problems, meta)
        attempts = {}
        for alternative in inner:  # the first alternative that fits without problems
            attempts[alternative] = Problems()
            value = _check_value(alternative, item, path, attempts[alternative], meta)
            if not attempts[alternative]:
                return value
        number = next((a for a in inner if a in (int, float)), None)
        mappings = [a for a in inner if dataclasses.is_dataclass(a)]
        if number is not None and isinstance(item.value, (int, float)) and \
                not isinstance(item.value, bool):
            problems.extend(attempts[number])  # a number, but not a valid one (out of range)
        elif mappings and isinstance(item.value, dict):  # the mapping it was closest to
            problems.extend(min((attempts[a] for a in mappings), key=len))
        elif isinstance(item.value, str) and str in inner:  # a string, but not a valid one
            problems.extend(attempts[str])
        elif isinstance(item.value, list) and (lists := [a for a in inner
                                                          if typing.get_origin(a) is list]):
            problems.extend(attempts[lists[0]])  # a list, but not a valid one (too short)
        else:
            names = " or ".join(_type_name(a) for a in inner)
            problems.add(item.loc, path, f"expected {names}, got {_show(item.value)}")
        return MISSING
    if item.value is None:
        problems.add(item.loc, path, f"expected {_type_name(tp)}, got null")
        return MISSING
    if origin is Literal:
        if item.value not in args:
            choices = ", ".join(str(a) for a in args)
            problems.add(item.loc, path, f"{_show(item.value)} is not one of: {choices}")
            return MISSING
        return item.value
    if dataclasses.is_dataclass(tp):
        return check(tp, item, problems, path)
    if origin is list:
        if not _container_ok(item, list, path, problems, meta):
            return MISSING
        out = [_check_value(args[0], sub, f"{path}[{i}]", problems, meta.get("items", {}))
               for i, sub in enumerate(item.value)]
        return MISSING if MISSING in out else out
    if origin is dict:
        if not _container_ok(item, dict, path, problems, meta):
            return MISSING
        out = {}
        for key, sub in item.value.items():
            sub_path = f"{path}.{key}"
            if "pattern" in meta and not re.fullmatch(meta["pattern"], str(key)):
                rule = meta.get("pattern_help", f"must match {meta['pattern']}")
                problems.add(item.key_locs.get(key, item.loc), sub_path,
                             f"name {key!r} is not valid: {rule}")
            out[str(key)] = _check_value(args[1], sub, sub_path, problems, meta.get("items", {}))
        return MISSING if MISSING in out.values() else out
    value = _scalar(tp, item, path, problems)
    if value is MISSING:
        return MISSING
    return _check_limits(value, item, path, problems, meta)


def _container_ok(item: Item, kind: type, path: str, problems: Problems, meta: dict) -> bool:
    """Is `item` a list / mapping (`kind`) with at least meta['min_items'] entries?"""
    if not isinstance(item.value, kind):
        problems.add(item.loc, path, f"expected {_type_name(kind[Any])}, got {_show(item.value)}")
        return False
    if len(item.value) < meta.get("min_items", 0):
        problems.add(item.loc, path, f"needs at least {meta['min_items']} item(s)")
        return False
    return True


def _scalar(tp: type, item: Item, path: str, problems: Problems) -> Any:
    value = item.value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and item.plain and _FLOAT_RE.fullmatch(value) and \
                any(c.isdigit() for c in value):
            return float(value.replace("_", ""))  # YAML 1.1 reads 3e-4 as a string
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            problems.add(item.loc, path, f"expected a string, got the number {_show(value)}; "
                                         "quote it")
            return MISSING
    problems.add(item.loc, path, f"expected {_type_name(tp)}, got {_show(value)}")
    return MISSING


def _check_limits(value: Any, item: Item, path: str, problems: Problems, meta: dict) -> Any:
    tests = [("gt", lambda v, b: v > b, "greater than"), ("ge", lambda v, b: v >= b, "at least"),
             ("lt", lambda v, b: v < b, "less than"), ("le", lambda v, b: v <= b, "at most")]
    for key, ok, words in tests:
        if key in meta and not ok(value, meta[key]):
            problems.add(item.loc, path, f"{_show(item.value)} is out of range: must be {words} "
                                         f"{meta[key]}")
            return MISSING
    if isinstance(value, float) and value != value:
        problems.add(item.loc, path, "NaN is not allowed")
        return MISSING
    if "choices" in meta and value not in meta["choices"]:
        problems.add(item.loc, path, f"{_show(value)} is not one of: "
                                     f"{', '.join(map(str, meta['choices']))}")
        return MISSING
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        problems.add(item.loc, path, f"{_show(value)} is not valid: "
                                     f"{meta.get('pattern_help', 'must match ' + meta['pattern'])}")
        return MISSING
    if "validate" in meta and (message := meta["validate"](value)):
        problems.add(item.loc, path, message)
        return MISSING
    return value


def check(schema: type, item: Item, problems: Problems, path: str = "") -> Any:
    """Build a `schema` instance from `item`, adding every problem found to `problems`."""
    if not isinstance(item.value, dict):
        problems.add(item.loc, path, f"expected a mapping, got {_show(item.value)}")
        return MISSING
    if hasattr(schema, "prepare"):
        schema.prepare(item)
    hints = typing.get_type_hints(schema)
    known = {f.name: f for f in dataclasses.fields(schema)}
    values: dict[str, Any] = {}
    for key, sub in item.value.items():
        sub_path = f"{path}.{key}" if path else key
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6) or \
                nested_keys(schema, key)
            hint = f" (did you mean {close[0]!r}?)" if close else \
                f"; known keys: {', '.join(known)}"
            problems.add(item.key_locs.get(key, sub.loc), sub_path, f"unknown key{hint}")
            continue
        values[key] = _check_value(hints[key], sub, sub_path, problems, dict(known[key].metadata))
    for name, f in known.items():
        required = f.default is MISSING and f.default_factory is MISSING
        if required and name not in item.value:
            problems.add(item.loc, f"{path}.{name}" if path else name,
                         f"missing required key: {f.metadata.get('help', '')}".rstrip(": "))
    if hasattr(schema, "cross_check"):
        schema.cross_check(item, problems, path)
    if MISSING in values.values() or any(
            f.default is MISSING and f.default_factory is MISSING and n not in values
            for n, f in known.items()):
        return MISSING
    return schema(**values)


def nested_keys(schema: type, key: str) -> list[str]:
    """Dotted paths of `schema`'s sections that hold a field named `key` (for a key given at
    the wrong level: `temperature` -> `params.temperature`)."""
    hints = typing.get_type_hints(schema)
    found = []
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        for tp in (tp, *(typing.get_args(tp) if union else ())):  # a section, or an optional one
            if dataclasses.is_dataclass(tp) and key in {g.name for g in dataclasses.fields(tp)}:
                found.append(f"{f.name}.{key}")
                break
    return found


# ----------------------------------------------------------------------------------------------
# Entry points


def load_config(schema: type, path: Path | None, overrides: list[tuple[str, Item]] = ()) -> Any:
    """Read `path` (or nothing), apply overrides in order, and return a checked `schema` instance.

    Raises UsageError with one line per problem.
    """
    problems = Problems()
    if path is None:
        root = Item({}, Loc("(command line)"))
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read config: {exc.strerror}; check the path")
        root = parse_yaml(text, str(path), problems)
        if not isinstance(root.value, dict):
            raise UsageError(f"{root.loc}: (top level): expected a mapping of keys, got "
                             f"{_show(root.value)}")
    for key, item in overrides:
        apply_override(root, key, item)
    config = check(schema, root, problems)
    if problems:
        raise UsageError(*problems)
    return config


def detect_kind(path: Path, kinds: dict[str, type], fallback: str) -> str:
    """Which of `kinds` a config file is, from each schema's KIND_MARKER key (`fallback` when
    no marker is present)."""
    root = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path), Problems())
    keys = set(root.value) if isinstance(root.value, dict) else set()
    for kind, schema in kinds.items():
        marker = getattr(schema, "KIND_MARKER", None)
        if marker and marker in keys:
            return kind
    return fallback


def marked_kinds(path: Path, kinds: dict[str, type]) -> list[str]:
    """The kinds whose KIND_MARKER key the config file at `path` has at its top level (empty
    when it cannot be read or parsed: loading it will say why)."""
    try:
        root = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path), Problems())
    except (OSError, UnicodeDecodeError, UsageError):
        return []
    keys = set(root.value) if isinstance(root.value, dict) else set()
    return [kind for kind, schema in kinds.items()
            if getattr(schema, "KIND_MARKER", None) in keys]


def to_dict(config: Any) -> dict:
    """A config as plain data (for config.yaml); every default filled in."""
    return dataclasses.asdict(config)


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def describe(schema: type, indent: str = "") -> list[str]:
    """The schema as documented YAML lines (for README and `acr validate --schema`)."""
    lines = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{indent}{f.name}:  # {help_text}")
            lines += describe(tp, indent + "  ")
            continue
        if f.default is not MISSING:
            default = yaml.safe_dump(f.default, default_flow_style=True).strip()
            default = default.removesuffix("\n...").removesuffix("...").strip()
        elif f.default_factory is not MISSING:
            default = yaml.safe_dump(f.default_factory(), default_flow_style=True).strip()
        else:
            default = "(required)"
        lines.append(f"{indent}{f.name}: {default}  # {help_text}")
    return lines


def schema_default(schema: type, dotted: str) -> Any:
    """The default of a (nested) schema field, e.g. schema_default(GenerateConfig,
    'params.top_k') -> 250; through optional sections too ('continuation.prompt_seconds')."""
    head, _, rest = dotted.partition(".")
    found = {f.name: f for f in dataclasses.fields(schema)}[head]
    if rest:
        tp = typing.get_type_hints(schema)[head]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return schema_default(inner[0] if inner else tp, rest)
    if found.default_factory is not MISSING:
        return found.default_factory()
    return found.default
