"""What each `analyze.py` command does with its parsed arguments (argparse stays in the CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from compression import data as data_mod
from compression.analysis import layers as L
from compression.analysis.profile import compose_run_config, profile_overrides
from compression.analysis.report import Analysis, Options, layer_views, run_command
from compression.analysis.runs import RunTable, load_runs
from compression.analysis.selection import Selection
from compression.core import paths
from compression.core.errors import ConfigError
from compression.models.build import ModelConfig, build_model
from compression.training.baseline import cached_baseline


def _options(args: argparse.Namespace, out: Path) -> Options:
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    return Options(out=out, tolerance=args.tolerance, by=args.by, formats=formats,
                   log_to_mlflow=not args.no_log, run_id=args.run, select_on=args.select_on,
                   ui_url=args.ui_url, model=_trusted_model(args.overrides))


def _trusted_model(overrides: list[str]) -> ModelConfig | None:
    """The model the user names on this command line (`model._target_=pkg.fn`, `model=custom`):
    the only factory a run's artifact may be rebuilt with."""
    if not any(o.lstrip("+~").split("=", 1)[0].split(".")[0] == "model" for o in overrides):
        return None
    return compose_run_config(overrides).model


def _written(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def from_runs(args: argparse.Namespace) -> list[Path]:
    selection = Selection(experiment=args.experiment, sweep=args.sweep, filter=args.filter,
                          tracking_uri=args.tracking_uri)
    runs = load_runs(selection)
    args.out = args.out or selection.default_out(runs.sweep_name)
    if getattr(args, "register", None) and args.command != "sweet-spot":
        raise ConfigError("--register applies to the sweet-spot command")
    analysis = run_command(args.command, runs, _options(args, args.out))
    if getattr(args, "register", None):
        register_sweet_spot(analysis, args.register)
    return analysis.written()


def register_sweet_spot(a: Analysis, name: str) -> str:
    """Register the sweet spot's MLflow model as a new version of `name` (alias sweet-spot,
    its metrics as tags); one line when there is no sweet spot or it has no MLflow model."""
    from compression.runtime import mlflow_model

    if a.sweet is None or a.sweet.best is None:
        raise ConfigError(f"--register {name}: no sweet spot to register (no run within the "
                          "tolerance)")
    best = a.sweet.best
    tags = {k: f"{val:.6g}" for k, val in best.items() if isinstance(val, float)}
    tags["label"] = str(best["label"])
    version = mlflow_model.register(a.client(), best["run_id"], name, tags)
    print(f"registered run {best['run_id']} as {name} version {version} "
          f"(models:/{name}@{mlflow_model.SWEET_SPOT_ALIAS})")
    return version


def _overrides_name(overrides: list[str]) -> str:
    return "-".join(o.replace("=", "_").replace("/", "_") for o in overrides) or "all"


def talk_profile(args: argparse.Namespace) -> list[Path]:
    from compression.analysis.talk import talk_table

    args.out = args.out or paths.output_dir() / "analysis" / "profile-talk"
    table = talk_table()
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "profile.csv", index=False)
    print(table.drop(columns=["source"]).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for r in table.itertuples():
        print(f"{r.model}: cited from {r.source}")
    return _written(args.out)


def profile(args: argparse.Namespace) -> list[Path]:
    if getattr(args, "talk", False):
        if args.overrides:
            raise ConfigError("analyze.py profile --talk takes no overrides (its models are "
                              f"fixed): got {' '.join(args.overrides)}")
        return talk_profile(args)
    name = _overrides_name(args.overrides)
    args.out = args.out or paths.output_dir() / "analysis" / f"profile-{name}"
    table = profile_overrides(args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "profile.csv", index=False)
    shown = table.drop(columns=["file_bytes", "tensor_bytes"])
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for r in table.itertuples():
        verdict = "matches" if r.file_matches else "DOES NOT match"
        print(f"{r.model}: file {r.file_bytes} B = tensors {r.tensor_bytes} B + "
              f"header {r.header_bytes} B ({r.overhead_pct:.2f}% overhead): {verdict}; "
              f"torch.save(state_dict) {r.state_dict_bytes} B (file / state_dict "
              f"{r.file_vs_state_dict:.4f})")
    return _written(args.out)


def model_layers(args: argparse.Namespace) -> list[Path]:
    """Per-layer views of a model built from conf/ without a run: the trained dense baseline
    from the cache when `train.py` has cached one for this config (nothing is trained here),
    else freshly initialised weights; the output says which."""
    name = _overrides_name(args.overrides)
    args.out = args.out or paths.output_dir() / "analysis" / f"layers-{name}"
    rc = compose_run_config(args.overrides)
    splits = data_mod.load(rc.data)  # its digest is part of the baseline's cache key
    spec = splits.spec
    cached = cached_baseline(rc.model, rc.data, rc.train, rc.seed, splits, rc.paths.cache_dir)
    if cached is None:
        model, which = build_model(rc.model, spec), "initial weights: no cached baseline"
        print(f"{rc.model.name} on {spec.name}: no trained baseline cached for this config in "
              f"{rc.paths.cache_dir} (python train.py {' '.join(args.overrides)} caches one); "
              "showing freshly initialised weights")
    else:
        model, path = cached
        which = "trained baseline"
        print(f"{rc.model.name} on {spec.name}: the trained baseline cached at {path}")
    a = Analysis(RunTable(pd.DataFrame()), _options(args, args.out))
    layer_views(a, L.model_layers(model, spec), L.layer_weights(model),
                f"{rc.model.name} on {spec.name} ({which})")
    return a.written()
