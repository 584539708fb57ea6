"""Config defaults have one source: the dataclasses. The YAML keys of every dataclass-backed group
(pruning, quantization, runtime: a file per registered entry; measure, export, train, tracking:
default.yaml) are generated from them (compression/config/confgen.py), and agree with them;
presets extend a generated file with only what differs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from compression.config import confgen
from compression.core.registry import build_dataclass


def test_yaml_files_are_generated_from_the_dataclasses() -> None:
    assert confgen.stale() == [], (
        "run `python -m compression.config.confgen` after changing a config")


def _defaults(cls: type) -> dict:
    return {f.name: confgen.default(f) for f in dataclasses.fields(cls) if f.init}


def _load(path) -> dict:
    values = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(values, dict)
    return values


@pytest.mark.parametrize("group", ["pruning", "quantization", "runtime"])
def test_yaml_values_equal_the_dataclass_defaults_and_build(group: str) -> None:
    registry = confgen.registries()[group]
    leaf = registry.key.rsplit(".", 1)[-1]
    for entry in registry.entries():
        values = _load(confgen.CONF / group / f"{entry.name}.yaml")
        # the name key is the file's entry (runtime=executorch shares RuntimeConfig with torch)
        assert values == {**_defaults(entry.config_cls), leaf: entry.name}, entry.name
        if entry.name != "mask":  # the mask file's path has no default
            registry.build_config(values)


@pytest.mark.parametrize("group", ["pruning", "quantization", "runtime"])
def test_every_file_of_a_registry_group_is_generated(group: str) -> None:
    """No hand-written file hides among generated ones (each is a registered entry's), but for
    small_dense: a recipe over pruning=none and model.width, no registry entry of its own."""
    recipes = {confgen.CONF / "pruning" / "small_dense.yaml"}
    generated = set(confgen.expected())
    assert set((confgen.CONF / group).glob("*.yaml")) - recipes <= generated


@pytest.mark.parametrize("group", ["measure", "export", "train", "tracking"])
def test_default_file_of_a_single_group_is_the_dataclass(group: str) -> None:
    cls = confgen.singles()[group]
    values = _load(confgen.CONF / group / "default.yaml")
    assert values == _defaults(cls)
    build_dataclass(cls, values, group)


def test_presets_hold_only_their_differences() -> None:
    assert confgen.preset_problems() == []


@pytest.mark.parametrize(("group", "preset"), [("train", "fashion"), ("tracking", "off")])
def test_a_preset_composes_to_the_defaults_plus_its_own_keys(group: str, preset: str) -> None:
    """Hydra merges the generated default under the preset, in the dataclass's key order."""
    own = _load(confgen.CONF / group / f"{preset}.yaml")
    assert own.pop("defaults") == ["default"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(confgen.CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"{group}={preset}"])
    finally:
        GlobalHydra.instance().clear()
    section = OmegaConf.to_container(cfg[group])
    assert section == {**_defaults(confgen.singles()[group]), **own}
    assert list(section) == list(_defaults(confgen.singles()[group]))


def test_criterion_comments_list_every_registered_criterion() -> None:
    from compression.pruning.criteria import CRITERIA

    assert "wanda" in CRITERIA
    for name in ("unstructured", "structured", "block", "nm"):
        line = next(line for line in (confgen.CONF / "pruning" / f"{name}.yaml").read_text()
                    .splitlines() if line.startswith("criterion:"))
        assert all(c in line for c in CRITERIA.names()), name
    random = (confgen.CONF / "pruning" / "random.yaml").read_text()
    assert "fixed: random is the unstructured baseline" in random  # its own note stays


def test_hand_written_groups_validate_through_their_dataclass() -> None:
    """data, model and metric files share one dataclass without a config class per entry, so
    they stay hand-written; every one still builds through that dataclass."""
    from compression.data import DataConfig
    from compression.models.config import ModelConfig
    from compression.training.quality import MetricConfig

    for group, cls in (("data", DataConfig), ("model", ModelConfig), ("metric", MetricConfig)):
        for path in sorted((confgen.CONF / group).glob("*.yaml")):
            values = _load(path)
            values.pop("defaults", None)  # data=text picks its metric
            cls.from_dict(values)


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


def _copy_generated_groups(tmp_path, monkeypatch):
    """conf/'s generated groups copied to tmp_path, which confgen then reads and writes."""
    copy = tmp_path / "conf"
    for group in [*confgen.registries(), *confgen.singles()]:
        (copy / group).mkdir(parents=True)
        for p in (confgen.CONF / group).glob("*.yaml"):
            (copy / group / p.name).write_text(p.read_text())
    monkeypatch.setattr(confgen, "CONF", copy)
    return copy


def test_a_changed_default_makes_the_file_stale(tmp_path, monkeypatch) -> None:
    """The check can fail: a file whose value differs from the dataclass is reported."""
    path = confgen.CONF / "pruning" / "structured.yaml"
    copy = _copy_generated_groups(tmp_path, monkeypatch)
    assert confgen.stale() == []
    edited = path.read_text().replace("sparsity: 0.5 ", "sparsity: 0.6 ")
    (copy / "pruning" / "structured.yaml").write_text(edited)
    assert confgen.stale() == [copy / "pruning" / "structured.yaml"]
    assert confgen.main([]) == 0  # regenerating restores the dataclass's value
    assert "sparsity: 0.5 " in (copy / "pruning" / "structured.yaml").read_text()


def test_a_changed_single_group_default_and_a_restated_preset_key_are_reported(
        tmp_path, monkeypatch, capsys) -> None:
    copy = _copy_generated_groups(tmp_path, monkeypatch)
    measure = copy / "measure" / "default.yaml"
    measure.write_text(measure.read_text().replace("repeats: 100 ", "repeats: 50  "))
    assert confgen.stale() == [measure]
    preset = copy / "tracking" / "off.yaml"
    preset.write_text(preset.read_text() + "experiment: compression\n")
    assert confgen.preset_problems() == [
        "conf/tracking/off.yaml: experiment: compression restates the default of TrackingConfig "
        "(drop it)"]
    assert confgen.main(["--check"]) == 1
    assert "out of date: conf/measure/default.yaml" in capsys.readouterr().out
