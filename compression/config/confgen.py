"""conf/pruning/<method>.yaml and conf/quantization/<mode>.yaml, generated from the registered
config dataclasses: the dataclass is the one source of every default (and of each key's comment,
its inline `# ...` in the dataclass). A YAML file keeps only its hand-written header (the comment
lines before the first key, what the method is); the keys below it are generated.

    python -m compression.config.confgen          # rewrite the files (after changing a dataclass)
    python -m compression.config.confgen --check  # exit 1 if a file is out of date (tests do this)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from functools import cache
from pathlib import Path
from typing import Any

from compression.core import paths

CONF = paths.PROJECT_ROOT / "conf"
MARK = "# below: generated from {cls} by `python -m compression.config.confgen`; edit the dataclass"
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def registries() -> dict[str, Any]:
    """Config group -> registry whose entries each have a YAML file in that group."""
    from compression.pruning import PRUNERS
    from compression.quantization import QUANTIZERS

    return {"pruning": PRUNERS, "quantization": QUANTIZERS}


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


def comment(cls: type, name: str) -> str:
    """The field's comment from the most derived class that has one: its inline comment, or,
    for an inherited field whose meaning differs here, the class's FIELD_NOTES entry."""
    for klass in cls.__mro__:
        notes = vars(klass).get("FIELD_NOTES", {})
        if name in notes:
            return notes[name]
        if dataclasses.is_dataclass(klass) and name in _comments(klass):
            return _comments(klass)[name]
    return ""


def default(f: dataclasses.Field) -> Any:
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


def body(cls: type) -> str:
    """The generated keys of `cls`'s YAML: every init field at its default, with its comment."""
    rows = [(f"{f.name}: {fmt(default(f))}", comment(cls, f.name))
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


def expected() -> dict[Path, str]:
    """Every generated file's path and full text (header kept from the file on disk)."""
    out = {}
    for group, registry in registries().items():
        for entry in registry.entries():
            path = CONF / group / f"{entry.name}.yaml"
            old = path.read_text() if path.exists() else ""
            out[path] = header(old) + body(entry.config_cls)
    return out


def stale() -> list[Path]:
    return [p for p, text in expected().items() if not p.exists() or p.read_text() != text]


def _shown(path: Path) -> str:
    return str(path.relative_to(CONF.parent) if path.is_relative_to(CONF.parent) else path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = p.parse_args(argv)
    if args.check:
        for path in stale():
            print(f"out of date: {_shown(path)}")
        return 1 if stale() else 0
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
