"""pruning.sparse_kernel: very sparse Linear layers run by a CSR kernel, exact and reloadable."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from compression.artifact.format import load_artifact, state_bytes
from compression.core.errors import ConfigError
from compression.measure import layer_stats, sparsity
from compression.models.build import build_model
from compression.pruning.sparse_kernel import SparseLinear, check_swappable, sparse_layers
from compression.run import pipeline


def _sparse_linear(out: int, inp: int, zeros: float, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    lin = nn.Linear(inp, out, bias=bias)
    with torch.no_grad():
        lin.weight[torch.rand(out, inp) < zeros] = 0
    return lin


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_computes_what_the_linear_does(bias: bool) -> None:
    lin = _sparse_linear(30, 40, 0.9, bias)
    sparse = SparseLinear.from_linear(lin)
    assert torch.equal(sparse.weight(), lin.weight.detach())
    for shape in ((1, 40), (17, 40), (2, 3, 40)):
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(sparse(x), lin(x), rtol=1e-5, atol=1e-6)
    twin = copy.deepcopy(sparse)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), lin(x), rtol=1e-5, atol=1e-6)


def test_state_dict_holds_the_dense_weight_and_loads_back_strictly() -> None:
    lin = _sparse_linear(8, 12, 0.75)
    state = SparseLinear.from_linear(lin).state_dict()
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], lin.weight.detach())
    shell = SparseLinear(12, 8)
    shell.load_state_dict(state)
    assert torch.equal(shell.weight(), lin.weight.detach())
    with pytest.raises(RuntimeError, match=r'Missing key.*"weight"'):
        SparseLinear(12, 8).load_state_dict({"bias": state["bias"]})
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        SparseLinear(12, 9).load_state_dict(state)


def test_memory_is_counted_as_the_csr_tensors_and_zeros_as_zeros() -> None:
    lin = _sparse_linear(100, 200, 0.95)
    nnz = int((lin.weight != 0).sum())
    model = nn.Sequential(SparseLinear.from_linear(lin))
    # int32 row pointers and column indices, fp32 values and bias
    expected = 101 * 4 + nnz * 4 + nnz * 4 + 100 * 4
    assert state_bytes(model) == expected
    [row] = layer_stats(model)
    assert row.bytes == expected and row.prunable
    assert sparsity([row]) == 1 - nnz / 20000


def test_only_selected_linear_layers_past_the_threshold_are_chosen(make_session) -> None:
    session = make_session("model=lenet5", "pruning=unstructured", "pruning.sparsity=0.9",
                           "pruning.exclude=[fc3]", "pruning.sparse_kernel_min=0.5")
    net = build_model(session.rc.model, session.data.spec)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight[torch.rand_like(m.weight) < 0.9] = 0
        net.fc2.weight[:, :] = 1.0  # dense: below the threshold
    # convs keep dense kernels, fc3 is excluded, fc2 is dense
    assert sparse_layers(net, session.rc.pruning) == ["fc1"]


def test_pipeline_runs_sparse_kernels_and_reloads_them(compose_cfg, tracking_uri) -> None:
    common = ("pruning=unstructured", "pruning.sparsity=0.95", "measure.latency=false")
    pipeline.run(compose_cfg(*common))
    pipeline.run(compose_cfg(*common, "pruning.sparse_kernel=true"))
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("compression")
    masked, sparse = client.search_runs([exp.experiment_id], order_by=["start_time ASC"])
    m, s = masked.data.metrics, sparse.data.metrics
    assert sparse.info.status == "FINISHED" and s["sparse_kernel_layers"] == 3
    assert "sparse_kernel_layers" not in m
    # Same weights, other kernel: same predictions, same zeros; far fewer bytes held in memory.
    assert s["accuracy"] == m["accuracy"] and s["sparsity"] == m["sparsity"]
    assert s["model_bytes"] < 0.2 * m["model_bytes"]
    local = Path(client.download_artifacts(sparse.info.run_id, "model/model.safetensors"))
    model, meta = load_artifact(local)
    assert meta["transforms"] == [{"kind": "sparse_linear", "layers": ["fc1", "fc2", "fc3"]}]
    assert all(isinstance(model.get_submodule(n), SparseLinear) for n in ("fc1", "fc2", "fc3"))


def test_dtype_conversion_keeps_the_csr_view_in_step() -> None:
    lin = _sparse_linear(6, 9, 0.8)
    sparse = SparseLinear.from_linear(lin).double()
    x = torch.randn(3, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), lin.double()(x))
    sparse.load_state_dict(sparse.state_dict())  # reloading keeps the module's dtype
    assert sparse.values.dtype == torch.float64 and sparse(x).dtype == torch.float64


class _Tied(nn.Module):
    """Reads its Linear's weight itself: a sparse kernel cannot stand in for it."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten, self.fc = nn.Flatten(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.flatten(x), self.fc.weight) + self.fc(
            self.flatten(x))


def test_models_that_read_a_linears_weight_are_refused_before_training(make_session) -> None:
    session = make_session("pruning=unstructured", "pruning.sparse_kernel=true")
    example = session.data.spec.example_input(1)
    with pytest.raises(ConfigError, match="the model does not run with its Linear layers "
                                          "swapped for sparse ones"):
        check_swappable(_Tied(), session.rc.pruning, example)
    check_swappable(build_model(session.rc.model, session.data.spec), session.rc.pruning,
                    example)
    attention = nn.MultiheadAttention(8, 2)
    with torch.no_grad():
        attention.out_proj.weight.zero_()  # sparse enough, but a Linear subclass read directly
    assert sparse_layers(nn.Sequential(attention), session.rc.pruning) == []
