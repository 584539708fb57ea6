"""A single run stays out of the sweep layer: only a trial of a sweep that prunes imports it."""

from __future__ import annotations

import subprocess
import sys

from shrink import FAST

from compression.core.job import JobContext, job_env
from compression.core.paths import PROJECT_ROOT

SCRIPT = """
import sys
from hydra import compose, initialize_config_dir
import compression.config.run as config
from compression.run import pipeline
with initialize_config_dir(config_dir=str(config.CONFIG_DIR), version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[1:])
pipeline.run(cfg)
print(sorted(m for m in sys.modules if m.startswith("compression.sweep")))
"""


def test_a_single_run_does_not_import_the_sweep_layer(tmp_path, tracking_uri) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *FAST, f"tracking.uri={tracking_uri}",
         f"paths.cache={tmp_path / 'cache'}", f"paths.artifacts={tmp_path / 'artifacts'}",
         "pruning=unstructured"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_job_context_reads_what_a_launcher_sets() -> None:
    env = {**job_env(workers=2, parent_run_id="abc", tags={"study_name": "s",
                                                           "trial_number": 3}),
           "UNRELATED": "x"}
    job = JobContext.current(env)
    assert (job.workers, job.parent_run_id) == (2, "abc")
    assert dict(job.tags) == {"study_name": "s", "trial_number": "3"}
    assert job.trial is None  # no pruner: the job does not report
    job = JobContext.current({**env, "COMPRESSION_OPTUNA_STORAGE": "sqlite:///x.db",
                              "COMPRESSION_OPTUNA_PRUNER": '{"name": "median", "kwargs": {}}'})
    assert job.trial == ("s", 3) and job.optuna_pruner == {"name": "median", "kwargs": {}}
    assert JobContext.current({}) == JobContext()
