"""Blocks that name their own removable units, for structured pruning (pruning/heads.py).

An attention or MLP block derives from `UnitBlock` and says which of its Linear layers' rows
make up a unit (`unit_producers`: q, k, v for a head; fc1 for a hidden neuron), which layer's
columns go with them (`unit_consumer`: out; fc2), how many rows one unit owns (`unit_size`:
head_dim; 1) and what else changes when units are removed (`units_kept`: the head count). The
pruner and the artifact loader that replays the removal then know nothing of the model: the
built-in ViT and character-LM blocks use it, and so can a user's own block or a wrapper around
a library's. Torch-free: a mixin beside `nn.Module`.
"""

from __future__ import annotations


class UnitBlock:
    unit_producers: tuple[str, ...] = ()  # sub-layers whose rows a unit owns, e.g. (q, k, v)
    unit_consumer: str = ""  # the sub-layer whose columns it owns, e.g. out

    @property
    def unit_size(self) -> int:
        """Rows of each producer (and columns of the consumer) one unit owns."""
        return 1

    def units_kept(self, count: int) -> None:
        """Called once the units are sliced, with how many are left (e.g. `num_heads`)."""
        return None
