"""Config defaults have one source: the dataclasses. conf/pruning and conf/quantization YAML keys
are generated from them (compression/config/confgen.py), and agree with them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from compression.config import confgen


def test_yaml_files_are_generated_from_the_dataclasses() -> None:
    assert confgen.stale() == [], (
        "run `python -m compression.config.confgen` after changing a config")


@pytest.mark.parametrize("group", ["pruning", "quantization"])
def test_yaml_values_equal_the_dataclass_defaults_and_build(group: str) -> None:
    registry = confgen.registries()[group]
    for entry in registry.entries():
        values = OmegaConf.to_container(OmegaConf.load(confgen.CONF / group / f"{entry.name}.yaml"))
        defaults = {f.name: confgen.default(f) for f in dataclasses.fields(entry.config_cls)
                    if f.init}
        assert values == defaults, entry.name
        if entry.name != "mask":  # the mask file's path has no default
            registry.build_config(values)


@dataclass
class _Example:
    """A config with every kind of value, and comments where a YAML reader needs them."""

    mode: str = "example"
    rate: float = 1e-05  # small
    # a list of words
    words: list[str] = field(default_factory=lambda: ["a", "*", "true"])
    table: dict[str, int] | None = None
    flag: bool = False


def test_generated_keys_read_back_to_the_defaults_with_their_comments() -> None:
    text = confgen.body(_Example)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "rate: 1.0e-05 # small" in lines
    assert 'words: [a, "*", "true"] # a list of words' in lines
    assert OmegaConf.to_container(OmegaConf.create(text)) == {
        "mode": "example", "rate": 1e-05, "words": ["a", "*", "true"], "table": None,
        "flag": False}


def test_a_changed_default_makes_the_file_stale(tmp_path, monkeypatch) -> None:
    """The check can fail: a file whose value differs from the dataclass is reported."""
    path = confgen.CONF / "pruning" / "structured.yaml"
    copy = tmp_path / "conf"
    (copy / "pruning").mkdir(parents=True)
    (copy / "quantization").mkdir()
    for group in ("pruning", "quantization"):
        for p in (confgen.CONF / group).glob("*.yaml"):
            (copy / group / p.name).write_text(p.read_text())
    monkeypatch.setattr(confgen, "CONF", copy)
    assert confgen.stale() == []
    edited = path.read_text().replace("sparsity: 0.5 ", "sparsity: 0.6 ")
    (copy / "pruning" / "structured.yaml").write_text(edited)
    assert confgen.stale() == [copy / "pruning" / "structured.yaml"]
    assert confgen.main([]) == 0  # regenerating restores the dataclass's value
    assert "sparsity: 0.5 " in (copy / "pruning" / "structured.yaml").read_text()
