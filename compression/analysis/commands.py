"""What each `analyze.py` command does with its parsed arguments (argparse stays in the CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from compression import paths
from compression.analysis import layers as L
from compression.analysis.profile import compose_run_config, profile_overrides, spec_for
from compression.analysis.report import Analysis, Options, layer_views, run_command
from compression.analysis.runs import RunTable, load_runs
from compression.analysis.selection import Selection
from compression.models import ModelConfig, build_model


def _options(args: argparse.Namespace, out: Path) -> Options:
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    return Options(out=out, tolerance=args.tolerance, by=args.by, formats=formats,
                   log_to_mlflow=not args.no_log, run_id=args.run, select_on=args.select_on,
                   model=_trusted_model(args.overrides))


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
    return run_command(args.command, runs, _options(args, args.out)).written()


def _overrides_name(overrides: list[str]) -> str:
    return "-".join(o.replace("=", "_").replace("/", "_") for o in overrides) or "all"


def profile(args: argparse.Namespace) -> list[Path]:
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
    """Per-layer views of a model built from conf/ (freshly initialised: no run, no sparsity)."""
    name = _overrides_name(args.overrides)
    args.out = args.out or paths.output_dir() / "analysis" / f"layers-{name}"
    rc = compose_run_config(args.overrides)
    spec = spec_for(rc.data)
    model = build_model(rc.model, spec)
    a = Analysis(RunTable(pd.DataFrame()), _options(args, args.out))
    layer_views(a, L.model_layers(model, spec), L.layer_weights(model),
                f"{rc.model.name} on {spec.name} (initial weights)")
    return a.written()
