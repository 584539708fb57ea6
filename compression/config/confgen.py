"""The YAML of every dataclass-backed config group, generated from its dataclass: the dataclass is
the one source of every default (and of each key's comment, its inline `# ...` there).

Which files are generated:
- registry groups (pruning, quantization, runtime): conf/<group>/<name>.yaml for every
  registered entry that has a config class, its name key (`method`, `mode`, `name`) set to
  the entry's name;
- single-dataclass groups (measure, export, train, tracking): conf/<group>/default.yaml.

A generated file keeps only its hand-written header (the comment lines before the first key,
what the option is); the keys below its MARK line are generated. A field that names an entry
of another registry (pruning.criterion) lists that registry's names as its comment, so a new
criterion shows up in every file that may use it.

Presets, the other files of a single-dataclass group (train/fashion.yaml, tracking/off.yaml),
stay hand-written and hold ONLY what deliberately differs: they extend the generated file
through Hydra's defaults list (`defaults: [default]`) and set just the keys whose value
differs from the dataclass's default; `--check` reports a preset that restates a default, a key
that is not a field, or one that does not extend `default`. Config groups whose entries share one
dataclass that validates them but have no config class of their own (data, model, metric:
DataConfig, ModelConfig and MetricConfig, each file a hand-picked subset of keys and values)
are hand-written too, and so is pruning/small_dense.yaml (a recipe over pruning=none that sets
model.width, not a registry entry).

    python -m compression.config.confgen          # rewrite the files (after changing a dataclass)
    python -m compression.config.confgen --check  # exit 1 if a file is out of date (tests do this)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from compression.config.confgen_yaml import (
    MARK,
    PLAIN,
    YAML_WORDS,
    body,
    comment,
    comment_source,
    declared_in,
    default,
    fmt,
    header,
)
from compression.core import paths

__all__ = ["CONF", "MARK", "PLAIN", "YAML_WORDS", "body", "choice_notes", "comment", "default",
           "expected", "fmt", "header", "main", "preset_problems", "registries", "singles",
           "stale"]

CONF = paths.PROJECT_ROOT / "conf"
PRESET_BASE = "default"  # the generated file of a single-dataclass group, which presets extend


def registries() -> dict[str, Any]:
    """Config group -> registry whose entries each have a YAML file in that group."""
    from compression.pruning import PRUNERS
    from compression.quantization import QUANTIZERS
    from compression.runtime import RUNTIMES

    return {"pruning": PRUNERS, "quantization": QUANTIZERS, "runtime": RUNTIMES}


def singles() -> dict[str, type]:
    """Config group -> the one dataclass that validates it (its conf/<group>/default.yaml)."""
    from compression.artifact.format import ExportConfig
    from compression.measure import MeasureConfig
    from compression.tracking import TrackingConfig
    from compression.training.loop import TrainConfig

    return {"measure": MeasureConfig, "export": ExportConfig, "train": TrainConfig,
            "tracking": TrackingConfig}


def _choices() -> dict[str, Any]:
    """Config key -> the registry whose names are that key's values."""
    from compression.pruning.criteria import CRITERIA

    return {CRITERIA.key: CRITERIA}


def choice_notes(cls: type, group: str) -> dict[str, str]:
    """Comments listing a registry's names, for `cls`'s fields that take one. Where a subclass
    comments the field itself (random: `criterion` is fixed), its own note stays."""
    out = {}
    for f in dataclasses.fields(cls):
        registry = _choices().get(f"{group}.{f.name}")
        if registry is not None and comment_source(cls, f.name)[0] in (
                None, declared_in(cls, f.name)):
            out[f.name] = f"{' | '.join(registry.names())} (every registered {f.name})"
    return out


def _text(path: Path, cls: type, group: str, values: dict[str, Any] | None = None) -> str:
    old = path.read_text() if path.exists() else ""
    return header(old) + body(cls, values, choice_notes(cls, group))


def expected() -> dict[Path, str]:
    """Every generated file's path and full text (header kept from the file on disk)."""
    out = {}
    for group, registry in registries().items():
        leaf = registry.key.rsplit(".", 1)[-1]
        for entry in registry.entries():
            if entry.config_cls is None:
                continue  # takes no config section: nothing to generate
            path = CONF / group / f"{entry.name}.yaml"
            out[path] = _text(path, entry.config_cls, group, {leaf: entry.name})
    for group, cls in singles().items():
        path = CONF / group / f"{PRESET_BASE}.yaml"
        out[path] = _text(path, cls, group)
    return out


def stale() -> list[Path]:
    """The generated files whose text on disk differs from what the dataclasses give."""
    return [p for p, text in expected().items() if not p.exists() or p.read_text() != text]


def preset_problems() -> list[str]:
    """What makes a preset of a single-dataclass group more than its deliberate differences."""
    out = []
    for group, cls in singles().items():
        defaults = {f.name: default(f) for f in dataclasses.fields(cls) if f.init}
        for path in sorted((CONF / group).glob("*.yaml")):
            if path.stem == PRESET_BASE:
                continue
            loaded = OmegaConf.to_container(OmegaConf.load(path))
            assert isinstance(loaded, dict)
            values = {str(k): v for k, v in loaded.items()}
            if values.pop("defaults", None) != [PRESET_BASE]:
                out.append(f"{_shown(path)}: must extend {PRESET_BASE} "
                           f"(defaults: [{PRESET_BASE}])")
            for key, value in values.items():
                if key not in defaults:
                    out.append(f"{_shown(path)}: {key} is not a field of {cls.__qualname__}")
                elif value == defaults[key]:
                    out.append(f"{_shown(path)}: {key}: {fmt(value)} restates the default of "
                               f"{cls.__qualname__} (drop it)")
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(CONF.parent) if path.is_relative_to(CONF.parent) else path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = p.parse_args(argv)
    problems = preset_problems()
    for problem in problems:  # hand-written: reported, never rewritten
        print(f"preset: {problem}")
    if args.check:
        old = stale()
        for path in old:
            print(f"out of date: {_shown(path)}")
        return 1 if old or problems else 0
    for path, text in expected().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {_shown(path)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
