"""torch -> ONNX: export with a dynamic batch axis at a recorded opset, check with onnx.checker,
and turn an exporter failure into one line naming the op it could not convert."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from compression.core.errors import ConfigError
from compression.core.lazy import nn, torch
from compression.runtime.base import OnnxConfig

INPUT, OUTPUT = "input", "logits"  # tensor names in every exported graph

# Where the exporters name the op they could not convert, most specific first: the dynamo
# exporter's DispatchError (`op='aten.kthvalue'`), its node target, the legacy exporter's
# "Exporting the operator 'aten::i0' ...", and torch.export's unsupported call.
_OP_PATTERNS = (
    re.compile(r"op='([\w.]+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
    re.compile(r"operator '([\w:.]+)'"),
    re.compile(r"(aten[.:]{1,2}\w+)"),
)


def failed_op(e: BaseException) -> str | None:
    """The op an export error names, e.g. `aten.kthvalue`; None when it names none."""
    text = "\n".join(str(x) for x in _chain(e))
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).removesuffix(".default")
    return None


def _chain(e: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _summary(e: BaseException) -> str:
    """The exporter's own one-line reason (its long messages carry advice paragraphs first)."""
    text = str(e)
    if "Exception summary" in text:
        text = text.split("Exception summary", 1)[1]
    lines = [ln.strip(" /") for ln in text.splitlines()
             if ln.strip(" /") and not ln.strip().startswith(("#", "⬆", "%"))]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0] if lines else type(e).__name__)[:200]


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Exporters and ORT's quantization tools print progress lines (stdout and INFO logs) and
    deprecation warnings on every call: keep the run's log readable."""
    found = [logging.getLogger(n) for n in (*loggers, "torch.onnx", "torch.export",
                                            "onnxruntime", "root")]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(found, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, cfg: OnnxConfig,
                what: str = "the model") -> Path:
    """Write `model` (eval mode, fp32) to `path` as ONNX with a dynamic batch axis, then check
    it. A failure raises a one-line ConfigError naming the op the exporter could not convert."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.cat([example, example])  # batch 2: a batch of 1 would be specialized
    try:
        with quiet(), torch.no_grad():
            if cfg.exporter == "dynamo":
                program = torch.onnx.export(
                    model, (example,), input_names=[INPUT], output_names=[OUTPUT],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=cfg.opset, dynamo=True, verbose=False)
                program.save(str(path))
            else:
                torch.onnx.export(
                    model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                    opset_version=cfg.opset, dynamo=False)
        onnx.checker.check_model(str(path))
    except Exception as e:  # any exporter failure: one line, naming the op where it says
        op = failed_op(e)
        where = f"op {op} has no ONNX conversion" if op else _summary(e)
        raise ConfigError(f"runtime={cfg.name} cannot export {what} to ONNX opset "
                          f"{cfg.opset} ({cfg.exporter} exporter): {where}") from None
    return path
