"""The quality metric a run is judged by (`metric=top1|top5|macro_f1|custom`).

Its values are logged under the stable names `accuracy`, `val_accuracy`, `baseline_accuracy`,
`accuracy_drop`, ... (what sweeps, constraints, the sweet spot and the curves read), and under the
metric's own name too (`macro_f1`, `val_macro_f1`, `baseline_macro_f1`); the param `metric.name`
says which it is, and every axis and table labels it with that name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compression.core import validation as v
from compression.core.errors import ConfigError, first_line
from compression.core.lazy import torch
from compression.core.registry import Registry

# (logits (N, C), labels (N,)) -> value; sequence data give (N, C, T) and (N, T): one prediction
# per position, torch's cross-entropy layout, and every built-in metric counts positions
MetricFn = Callable[["torch.Tensor", "torch.Tensor"], float]
METRICS: Registry[MetricFn] = Registry("metric.name")
register_metric = METRICS.register
DEFAULT = "top1"
# Names shown on axes and tables (the fraction is shown in %).
TITLES = {"top1": "accuracy", "top5": "top-5 accuracy", "macro_f1": "macro F1",
          "perplexity": "perplexity"}
# Metrics where lower is better. Everything is logged in the `accuracy` slots as its own value;
# the drops (`accuracy_drop`, ...) are signed so that a positive drop is always quality lost,
# and sweeps, Pareto fronts and the sweet spot flip their direction for these (`higher_is_better`).
LOWER_IS_BETTER = {"perplexity"}


def higher_is_better(name: str | None) -> bool:
    """False for metrics such as perplexity; a run without a metric name is top-1."""
    return not name or name not in LOWER_IS_BETTER


def direction_of(frame: Any) -> str:
    """"min" when every run of a table of runs has a lower-is-better metric (its `metric.name`
    param), else "max": how Pareto fronts and the sweet spot's ties read the accuracy column."""
    if frame is None or "metric.name" not in getattr(frame, "columns", ()) or not len(frame):
        return "max"
    names = frame["metric.name"].fillna(DEFAULT).astype(str)
    return "min" if not names.map(higher_is_better).any() else "max"


def loss_sign(frame: Any) -> Any:
    """Per run, +1 where higher is better and -1 where lower is: quality lost = sign *
    (baseline - final)."""
    import pandas as pd

    if "metric.name" not in frame:
        return pd.Series(1.0, index=frame.index)
    names = frame["metric.name"].fillna(DEFAULT).astype(str)
    return names.map(lambda n: 1.0 if higher_is_better(n) else -1.0)


def quality_loss(baseline: float, final: float, name: str | None) -> float:
    """How much quality `final` lost against `baseline`: positive is worse, whatever the
    metric's direction (baseline - final for accuracy, final - baseline for perplexity)."""
    return baseline - final if higher_is_better(name) else final - baseline


@register_metric("top1")
def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return int((logits.argmax(dim=1) == labels).sum()) / max(1, labels.numel())


@register_metric("top5")
def top5(logits: torch.Tensor, labels: torch.Tensor) -> float:
    k = min(5, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return int(hits.sum()) / max(1, labels.numel())


@register_metric("macro_f1")
def macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes (those in labels or predictions) of 2TP / (2TP + FP + FN)."""
    classes = logits.shape[1]
    pred, labels = logits.argmax(dim=1).reshape(-1), labels.reshape(-1)  # positions too
    tp = torch.bincount(labels[pred == labels], minlength=classes).double()
    predicted = torch.bincount(pred, minlength=classes).double()
    actual = torch.bincount(labels, minlength=classes).double()
    seen = (predicted + actual) > 0
    f1 = 2 * tp[seen] / (predicted[seen] + actual[seen])
    return float(f1.mean()) if len(f1) else 0.0


@register_metric("perplexity")
def perplexity(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """exp of the mean cross-entropy (nats) of the true class over every prediction; lower is
    better (1 = certain and right; a uniform guess over C classes gives C)."""
    return float(torch.exp(torch.nn.functional.cross_entropy(logits.float(), labels)))


@dataclass
class MetricConfig:
    name: str = DEFAULT
    target: str | None = None  # `_target_`: the user's (logits, labels) -> float

    def __post_init__(self) -> None:
        if self.target is None:
            v.one_of("metric.name", self.name, sorted(METRICS))
        elif not isinstance(self.target, str) or "." not in self.target:
            raise ConfigError(f"metric._target_={self.target!r} must be a dotted path to a "
                              "function (logits, labels) -> float")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"metric.name={self.name!r} must be a plain name (letters, digits,"
                              " _), used as a metric name in MLflow")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MetricConfig:
        values = dict(values)
        target = values.pop("_target_", None)
        unknown = sorted(set(values) - {"name"})
        if unknown:
            raise ConfigError(f"metric.{unknown[0]} is not a valid key; allowed: name, _target_")
        name = values.get("name") or (target.rsplit(".", 1)[-1] if target else DEFAULT)
        return cls(name=name, target=target)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} if self.target is None else {"name": self.name,
                                                                 "_target_": self.target}

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.name)  # by name, as the analysis of logged runs sees it

    @property
    def is_default(self) -> bool:
        return self.target is None and self.name == DEFAULT

    def fn(self) -> MetricFn:
        """The function; a user `_target_` is imported here (a one-line error if it is not
        there) and its value checked to be a number on every call."""
        if self.target is None:
            return METRICS[self.name]
        from hydra.utils import get_method

        try:
            user = get_method(self.target)
        except Exception as e:  # hydra wraps import errors; one line
            raise ConfigError(f"metric._target_={self.target!r} cannot be imported: "
                              f"{first_line(e)}") from None

        def checked(logits: torch.Tensor, labels: torch.Tensor) -> float:
            value = user(logits, labels)
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"metric._target_={self.target!r} returned "
                                  f"{type(value).__name__}, not a number") from None

        return checked


def title(name: str | None) -> str:
    """What axes and prose call a metric: `accuracy` for top1, e.g. `macro F1` otherwise."""
    if not name or name == DEFAULT:
        return TITLES[DEFAULT]
    return TITLES.get(name, name)


def name_of(frame: Any) -> str | None:
    """The metric of a table of runs (its `metric.name` param); None for top-1 (also for runs
    logged before the param existed). Mixed metrics are all named, joined by `/`."""
    if frame is None or "metric.name" not in getattr(frame, "columns", ()):
        return None
    names = sorted({str(n) for n in frame["metric.name"].dropna().unique()} - {DEFAULT})
    return "/".join(names) or None


# `accuracy` as a word, or inside a column name (val_accuracy_drop), but not `accuracy-ish`
_WORD = re.compile(r"(?<![A-Za-z])([Aa])ccuracy(?![A-Za-z])")


def relabel(text: str, name: str | None) -> str:
    """`text` with every mention of accuracy naming the run's metric instead: the metric's
    name inside column names (`val_macro_f1_drop`), its title in prose (`macro F1 drop`)."""
    if not name:
        return text

    def swap(m: re.Match[str]) -> str:
        before = text[m.start() - 1] if m.start() else " "
        after = text[m.end()] if m.end() < len(text) else " "
        if before == "_" or after == "_" or before == "`":
            return name
        shown = "/".join(title(n) for n in name.split("/"))
        return shown[:1].upper() + shown[1:] if m.group(1) == "A" else shown

    return _WORD.sub(swap, text)


def relabel_figure(fig: Any, name: str | None) -> None:
    """Titles, axis labels and legend entries of a matplotlib figure, relabelled in place."""
    if not name:
        return
    for ax in fig.axes:
        ax.set_title(relabel(ax.get_title(), name))
        ax.set_xlabel(relabel(ax.get_xlabel(), name))
        ax.set_ylabel(relabel(ax.get_ylabel(), name))
        legend = ax.get_legend()
        for t in legend.get_texts() if legend else ():
            t.set_text(relabel(t.get_text(), name))
    if getattr(fig, "_suptitle", None) is not None:
        fig._suptitle.set_text(relabel(fig._suptitle.get_text(), name))


def named_metric(cfg: MetricConfig, results: dict[str, float]) -> dict[str, float]:
    """The quality figures again under the metric's own name (`macro_f1`, `val_macro_f1`,
    `baseline_macro_f1`, `macro_f1_drop`, ...); none for top-1, which `accuracy` already is."""
    if cfg.is_default:
        return {}
    out = {}
    for key in ("accuracy", "val_accuracy", "baseline_accuracy", "baseline_val_accuracy",
                "accuracy_drop", "val_accuracy_drop"):
        if key in results:
            out[key.replace("accuracy", cfg.name)] = results[key]
    return out
