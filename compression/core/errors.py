"""Error types users see. Each message is one readable line naming the key at fault."""


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any training starts."""


class ArtifactError(ConfigError):
    """A model file cannot be loaded: corrupt, foreign, or asking for code the caller did not
    name (a user factory is only ever called when the caller's own config names it). A
    ConfigError, so every command line prints it as its one-line error."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for a one-line error. A SQLAlchemy error's
    driver message (`orig`) is preferred; every line after the first (SQLAlchemy's
    "(Background on this error at: ...)", say) is dropped."""
    text = str(getattr(e, "orig", None) or e).strip()
    return (text.splitlines() or [repr(e)])[0][:limit]


class TrialPruned(Exception):
    """A sweep's pruner stopped this trial early (its validation accuracy could not catch up).
    Not a failure: the MLflow run ends KILLED with tag trial_state=PRUNED and the Optuna trial
    PRUNED. Defined here, not as optuna.TrialPruned, so tracking needs no Optuna import."""

    def __init__(self, message: str, step: int = -1, value: float = float("nan")) -> None:
        super().__init__(message)
        self.step, self.value = step, value

    # pickled back from joblib workers with its fields
    def __reduce__(self) -> tuple[type["TrialPruned"], tuple[str, int, float]]:
        return (type(self), (str(self), self.step, self.value))
