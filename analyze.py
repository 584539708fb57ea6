"""Analyze finished runs: curves, Pareto fronts, the sweet spot, per-layer views, model profiles
and reports. A thin command line over compression.analysis; `python analyze.py --help`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from compression.core.errors import ConfigError, first_line
from compression.core.redaction import install_log_redaction, redact

EPILOG = """examples:
  python analyze.py report --sweep latest                 # the newest sweep, everything
  python analyze.py pareto --experiment compression
  python analyze.py sweet-spot --sweep <parent run id or study name> --tolerance 0.005 --by latency
  python analyze.py sweet-spot --experiment ort --by rt_latency --register mlp-digits
  python analyze.py curves --filter "params.model.name = 'mlp'"
  python analyze.py layers --sweep latest --run <run id>   # per-layer views of one run
  python analyze.py layers model=lenet5                    # per-layer views of a model, no run
  python analyze.py profile                                # every built-in model
  python analyze.py profile model=lenet5 data=fashion_mnist
  python analyze.py profile --talk                         # AlexNet .. GPT-2 XL on the meta device
"""
RUN_COMMANDS = ("curves", "pareto", "sweet-spot", "layers", "report")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analyze.py", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=[*RUN_COMMANDS, "profile"])
    p.add_argument("overrides", nargs="*", help="profile / layers without runs: Hydra-style "
                   "overrides of conf/, e.g. model=lenet5 data=fashion_mnist")
    sel = p.add_argument_group("selection (runs from MLflow)")
    sel.add_argument("--experiment", help="every run of this MLflow experiment")
    sel.add_argument("--sweep", help="a sweep's parent run id, an Optuna study name, or 'latest'")
    sel.add_argument("--filter", help="MLflow filter string, e.g. \"params.model.name = 'mlp'\" "
                     "(alone, or narrowing --experiment / --sweep)")
    sel.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else the project's "
                     "mlflow.db; also an http:// tracking server")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="folder for the files (default: "
                     "outputs/analysis/<selection>)")
    out.add_argument("--tolerance", type=float, default=0.01,
                     help="accuracy drop allowed for the sweet spot, as a fraction (0.01 = 1 "
                     "point; default %(default)s)")
    out.add_argument("--by", default="size", choices=["size", "latency", "flops", "rt_latency"],
                     help="what the sweet spot minimises (default %(default)s; rt_latency: "
                     "latency in the deployment runtime, ranked by its interleaved speed-up)")
    out.add_argument("--select-on", default="val", choices=["val", "test"],
                     help="which accuracy drop qualifies the sweet spot: val (default; the "
                     "test accuracy of the pick stays unbiased) or test")
    out.add_argument("--talk", action="store_true", help="profile: the talk's table (AlexNet, "
                     "ResNet-50, BERT-large, GPT-2 XL built on the meta device) beside cited "
                     "figures, instead of the project's models")
    out.add_argument("--register", metavar="NAME", help="sweet-spot: register the chosen run's "
                     "MLflow model (logged with tracking.log_model=true) as a new version of "
                     "NAME in the Model Registry, alias 'sweet-spot', its metrics as tags")
    out.add_argument("--run", help="layers: the run to show (default: the sweet spot)")
    out.add_argument("--formats", default="png,svg,pdf", help="figure formats (default "
                     "%(default)s)")
    out.add_argument("--ui-url", help="the MLflow UI the parent run's report.md points its "
                     "figures at (default: the tracking server, else http://127.0.0.1:5000, "
                     "where `mlflow ui` serves)")
    out.add_argument("--no-log", action="store_true",
                     help="do not upload the outputs to the sweep's parent run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.perf_counter()
    install_log_redaction()
    try:
        written = dispatch(args)
    except ConfigError as e:
        print(f"error: {redact(e)}", file=sys.stderr)  # one readable line, no traceback
        return 2
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if not isinstance(e, MlflowException):
            raise
        # the store answered, then refused (permissions, a corrupt database): still one line
        print(f"error: MLflow: {redact(first_line(e))}", file=sys.stderr)
        return 1
    print(f"{len(written)} files in {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def dispatch(args: argparse.Namespace) -> list[Path]:
    # MLflow's download progress bars would interleave with this command's own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    model_only = args.command == "layers" and args.overrides and not (
        args.sweep or args.experiment or args.filter)
    if args.command != "profile" and not model_only:
        # A store that does not answer fails now, before the analysis stack (pandas,
        # matplotlib) loads: MLflow alone would retry it for minutes.
        from compression.tracking import check_reachable, resolve_uri

        check_reachable(resolve_uri(args.tracking_uri))
    # Imported here so that --help and argument errors answer instantly (mlflow is slow to load).
    from compression.analysis import commands

    if args.command == "profile":
        return commands.profile(args)
    if model_only:
        return commands.model_layers(args)
    return commands.from_runs(args)


if __name__ == "__main__":
    sys.exit(main())
