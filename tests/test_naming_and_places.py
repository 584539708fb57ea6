"""Parent runs named by what they sweep, analysis folders after them; the experiment tag that
makes `mlflow ui` open the runs table; the test session writing nothing into the project."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from compression import tracking
from compression.analysis.selection import Selection
from compression.core import paths
from compression.tracking.callbacks import sweep_name


def test_plain_multirun_parent_is_named_by_what_it_sweeps() -> None:
    preset = OmegaConf.create({"hydra": {"sweeper": {"params": {
        "pruning.sparsity": "0.0,0.5,0.9", "quantization": "none,dynamic_int8",
        "model": "mlp"}}}})
    assert sweep_name(preset, ["sweep=demo"]) == "demo: pruning.sparsity, quantization"
    plain = OmegaConf.create({"hydra": {"sweeper": {"params": None}}})
    assert sweep_name(plain, ["pruning=unstructured", "pruning.sparsity=0.5,0.9",
                              "seed=range(0,3)"]) == "pruning.sparsity, seed"
    name = "demo: pruning.sparsity, quantization-d777e4d2"
    folder = Selection(sweep="latest").name(name)
    assert folder == "sweep-demo_pruning.sparsity_quantization-d777e4d2"


def test_experiments_are_tagged_for_the_runs_table_new_and_existing(tracking_uri) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    new = tracking.ensure_experiment(client, "fresh")
    old = client.create_experiment("older")  # made before the project set the tag
    assert tracking.ensure_experiment(client, "older") == old
    for exp_id in (new, old):
        tags = client.get_experiment(exp_id).tags
        assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_the_session_writes_outputs_to_a_temporary_root(tmp_path_factory) -> None:
    root = paths.project_root()
    assert root != paths.PROJECT_ROOT.resolve()
    assert root.is_relative_to(tmp_path_factory.getbasetemp())
    assert paths.output_dir().is_relative_to(root)
    assert paths.default_tracking_uri().startswith(f"sqlite:///{root}")
    assert paths.default_artifact_root().is_relative_to(root)
