"""The quality metric: top1 / top5 / macro_f1 / a user function, used and named everywhere."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import f1_score

from compression.core.errors import ConfigError
from compression.run import pipeline
from compression.training.loop import evaluate
from compression.training.quality import (
    METRICS,
    MetricConfig,
    name_of,
    relabel,
    relabel_figure,
)

G = torch.Generator().manual_seed(0)
LOGITS = torch.randn(300, 7, generator=G)
LABELS = torch.randint(0, 7, (300,), generator=G)


def test_builtin_metrics_agree_with_references() -> None:
    pred = LOGITS.argmax(1)
    assert METRICS["top1"](LOGITS, LABELS) == int((pred == LABELS).sum()) / len(LABELS)
    top5 = np.mean([int(y) in row for row, y in zip(LOGITS.topk(5, 1).indices.tolist(),
                                                     LABELS.tolist(), strict=True)])
    assert METRICS["top5"](LOGITS, LABELS) == pytest.approx(top5)
    assert METRICS["macro_f1"](LOGITS, LABELS) == pytest.approx(
        f1_score(LABELS.numpy(), pred.numpy(), average="macro"))


def test_evaluate_with_a_metric_sees_the_whole_split_and_top1_is_unchanged() -> None:
    model = torch.nn.Flatten()  # logits = the inputs themselves
    x = LOGITS
    assert evaluate(model, x, LABELS, batch_size=32) == METRICS["top1"](LOGITS, LABELS)
    assert evaluate(model, x, LABELS, batch_size=32, metric=METRICS["macro_f1"]) == (
        METRICS["macro_f1"](LOGITS, LABELS))


def test_metric_config_validation_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"metric\.name='f2' is not a known value"):
        MetricConfig.from_dict({"name": "f2"})
    with pytest.raises(ConfigError, match="cannot be imported"):
        MetricConfig.from_dict({"_target_": "nowhere.score"}).fn()
    with pytest.raises(ConfigError, match="returned str, not a number"):
        MetricConfig.from_dict({"_target_": "factories.not_a_number"}).fn()(LOGITS, LABELS)


def _runs(uri: str) -> dict:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("compression")
    return {r.info.run_name: r.data for r in client.search_runs([exp.experiment_id])}


def test_a_chosen_metric_is_what_the_run_reports_and_names(compose_cfg, tracking_uri) -> None:
    pipeline.run(compose_cfg("metric=macro_f1", "pruning=unstructured",
                             "tracking.run_name=f1"))
    pipeline.run(compose_cfg("metric=custom", "metric._target_=factories.balanced_error",
                             "metric.name=balanced_recall", "tracking.run_name=user"))
    pipeline.run(compose_cfg("tracking.run_name=top1"))  # the same cached baseline
    runs = _runs(tracking_uri)
    f1, user, top1 = runs["f1"], runs["user"], runs["top1"]
    assert f1.params["metric.name"] == "macro_f1" and top1.params["metric.name"] == "top1"
    assert f1.metrics["macro_f1"] == f1.metrics["accuracy"]
    assert f1.metrics["macro_f1_drop"] == f1.metrics["accuracy_drop"]
    assert user.metrics["balanced_recall"] == user.metrics["accuracy"]
    # one baseline, three metrics: each evaluated, none read back as another's value
    assert top1.metrics["baseline_cache_hit"] == 1.0
    assert len({f1.metrics["baseline_accuracy"], user.metrics["baseline_accuracy"],
                top1.metrics["baseline_accuracy"]}) == 3


def test_reports_name_the_metric_on_axes_titles_and_tables() -> None:
    frame = pd.DataFrame({"metric.name": ["macro_f1", "macro_f1"], "accuracy": [0.5, 0.6]})
    name = name_of(frame)
    assert name == "macro_f1" and name_of(frame.assign(**{"metric.name": "top1"})) is None
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4], label="accuracy")
    ax.legend()
    ax.set(xlabel="size", ylabel="test accuracy (%)", title="Accuracy vs size")
    relabel_figure(fig, name)
    assert ax.get_ylabel() == "test macro F1 (%)" and ax.get_title() == "Macro F1 vs size"
    assert ax.get_legend().get_texts()[0].get_text() == "macro F1"
    plt.close(fig)
    assert relabel("| accuracy | accuracy_drop |", name) == "| macro F1 | macro_f1_drop |"
    assert relabel("test accuracy", None) == "test accuracy"
