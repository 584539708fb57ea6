"""MLflow's run status names (mlflow.entities.RunStatus), without importing MLflow to say them."""

FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"
