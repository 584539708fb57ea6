"""How confgen writes a config dataclass as YAML: each init field at its default (or at a value
the group fixes, such as the registry name of the file), with the comment of its definition.

Kept apart from confgen.py, which decides WHICH files are generated from WHICH dataclass: this
module only turns one dataclass into the text below a file's MARK line, and reads a file's
hand-written header back.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import textwrap
import tokenize
from collections.abc import Mapping
from functools import cache
from typing import Any

MARK = "# below: generated from {cls} by `python -m compression.config.confgen`; edit the dataclass"
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


@cache
def _comments(cls: type) -> dict[str, str]:
    """Field name -> the inline comment of its definition in `cls`'s own source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    notes: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            notes[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            first = node.lineno
            while first - 1 in notes and lines[first - 2].lstrip().startswith("#"):
                first -= 1  # whole comment lines right above the field
            span = range(first, (node.end_lineno or node.lineno) + 1)
            found = [notes[n] for n in span if n in notes]
            if found:
                out[node.target.id] = " ".join(found)
    return out


def comment_source(cls: type, name: str) -> tuple[type | None, str]:
    """The class whose note on field `name` applies to `cls` (the most derived one that has
    one: its inline comment, or its FIELD_NOTES entry for an inherited field whose meaning
    differs there) and that note; (None, "") when no class comments the field."""
    for klass in cls.__mro__:
        notes = vars(klass).get("FIELD_NOTES", {})
        if name in notes:
            return klass, notes[name]
        if dataclasses.is_dataclass(klass) and name in _comments(klass):
            return klass, _comments(klass)[name]
    return None, ""


def comment(cls: type, name: str) -> str:
    """The field's comment from the most derived class that has one: its inline comment, or,
    for an inherited field whose meaning differs here, the class's FIELD_NOTES entry."""
    return comment_source(cls, name)[1]


def declared_in(cls: type, name: str) -> type | None:
    """The most basic class of `cls`'s MRO that declares field `name` (its generic meaning)."""
    owners = [k for k in cls.__mro__ if name in vars(k).get("__annotations__", {})]
    return owners[-1] if owners else None


def default(f: dataclasses.Field) -> Any:
    """A field's default value (its default_factory called), as the dataclass would set it."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name} has no default")


def fmt(value: Any) -> str:
    """A value as YAML that OmegaConf reads back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exp = text.partition("e")
        if e and "." not in mantissa:  # YAML reads 1e-05 as a string; 1.0e-05 is a float
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, str):
        plain = PLAIN.fullmatch(value) and value.lower() not in YAML_WORDS
        return value if plain else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{fmt(k)}: {fmt(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as YAML")


def body(cls: type, values: Mapping[str, Any] | None = None,
         notes: Mapping[str, str] | None = None) -> str:
    """The generated keys of `cls`'s YAML: every init field at its default (or at `values`'
    entry, e.g. the registry name the file is for), with its comment (or `notes`' entry)."""
    values, notes = values or {}, notes or {}
    rows = [(f"{f.name}: {fmt(values[f.name] if f.name in values else default(f))}",
             notes.get(f.name, comment(cls, f.name)))
            for f in dataclasses.fields(cls) if f.init]
    width = max(len(r) for r, _ in rows) + 2
    lines = [MARK.format(cls=cls.__qualname__)]
    lines += [f"{r:<{width}}# {c}".rstrip() if c else r for r, c in rows]
    return "\n".join(lines) + "\n"


def header(text: str) -> str:
    """The hand-written comment lines before the first key (the generated mark excluded)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("#") or line.startswith(MARK.split("{", 1)[0].rstrip()):
            break
        out.append(line)
    return "\n".join(out) + "\n" if out else ""
