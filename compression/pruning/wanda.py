"""`wanda` criterion (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large
Language Models"; reference github.com/locuslab/wanda lib/prune.py): score |W_ij| * ||X_j||_2,
the weight's magnitude times the L2 norm of its input feature over calibration batches.

A feature with large activations keeps even its small weights. Wanda compares scores within
each output row (`per_row`): unstructured pruning removes the same fraction of every row; N:M
groups are within a row anyway. Differences from the reference: all layers are scored from one
calibration pass through the model as it is (the reference re-runs each transformer block on the
outputs of the already pruned blocks before it), and a Conv2d input feature is a (channel, ky, kx)
column of its unfolded input.
"""

from __future__ import annotations

from compression.core.lazy import torch
from compression.pruning.calibration import input_norms
from compression.pruning.criteria import _Stateless, register_criterion


@register_criterion("wanda")
class Wanda(_Stateless):
    per_row = True

    def scores(self) -> dict[str, torch.Tensor]:
        batches = self.session.calibration_batches(self.n_batches)
        norms = input_norms(self.model, self.layers, batches)
        out = {}
        for name, m in self.layers.items():
            w = m.weight.detach()
            out[name] = (w.reshape(w.shape[0], -1).abs() * norms[name]).view_as(w)
        return out
