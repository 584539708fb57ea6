"""Overrides that keep a real pipeline run around a second on digits (used by conftest and CLI
tests). Small but real: a few epochs of actual training, a few timed calls."""

FAST = [
    "train.epochs=3",
    "finetune.epochs=1",
    "measure.repeats=5",
    "measure.warmup=1",
    "measure.batch_size=16",
]
