"""Export a frozen vitq model to ONNX with QuantizeLinear/DequantizeLinear (QDQ) pairs, for onnxruntime's INT8 kernels.

Lowering, on a copy of the model:

* every enabled activation quantizer becomes a QDQ pair with its frozen per-tensor scale and zero point (uint8
  for asymmetric / unsigned, int8 for signed); it must be 8-bit, static and per-tensor;
* every quantized weight becomes a per-output-channel QDQ pair on the dequantized weight (int8 codes; weights of
  fewer bits keep their codes, which lie inside int8). Per-block scales (split qkv) are expanded to rows, which is
  the same math;
* quantizers left in float stay absent.

Anything with no standard INT8 kernel (activations of other bit widths, per-channel or per-token activation scales,
per-group weights) is refused with a VitqError naming the quantizer and the reason. The graph is traced with
PyTorch's TorchScript-based exporter, which turns ``fake_quantize_per_{tensor,channel}_affine`` into QDQ nodes; the
QuantizeLinear nodes on constant weights are then folded, so weights are stored as int8 initializers.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..calibrate import is_frozen
from ..convert import named_quantizers, quant_modules
from ..errors import VitqError
from ..granularity import PerTensor
from ..nn import QuantWeightModule
from ..quantizer import Quantizer


class QDQ(nn.Module):
    """Fake quantization written with PyTorch's fused ops, which the ONNX exporter lowers to QDQ nodes."""

    state = "quantize"  # read by QuantAttention to choose its explicit (quantized) path

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None):
        super().__init__()
        self.axis, self.qmin, self.qmax = axis, qmin, qmax
        if axis is None:
            self.scale, self.zero_point = float(scale.reshape(())), int(zero_point.reshape(()))
        else:
            self.register_buffer("scale", scale.reshape(-1).float().clone())
            self.register_buffer("zero_point", zero_point.reshape(-1).to(torch.int32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.axis, self.qmin,
                                                      self.qmax)


class Off(nn.Identity):
    """A quantizer left in float."""

    state = "off"


class ExportWeightLayer(nn.Module):
    """A QuantLinear/QuantConv2d for export: QDQ on the input and on the (dequantized) weight, then the float op."""

    def __init__(self, layer: QuantWeightModule, input_q: nn.Module, weight_q: nn.Module, output_q: nn.Module):
        super().__init__()
        self.layer = layer  # keeps op() and its hyper-parameters
        self.input_q, self.weight_q, self.output_q = input_q, weight_q, output_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        return self.output_q(layer.op(self.input_q(x), self.weight_q(layer.weight), layer.bias))


def _lower_activation(name: str, q: Quantizer) -> nn.Module:
    if not q.enabled:
        return Off()
    s = q.spec
    if not q.scheme.exportable:
        raise VitqError(f"{name}: {s.scheme} quantization has no standard INT8 kernel; export needs uniform "
                        "quantizers")
    if s.bits != 8:
        raise VitqError(f"{name}: {s.bits}-bit activations have no standard INT8 kernel; export needs 8-bit "
                        "activations (weights may have fewer bits)")
    if not isinstance(s.granularity, PerTensor):
        raise VitqError(f"{name}: {s.granularity.kind} activation scales have no standard INT8 kernel; export needs "
                        "per-tensor activation scales")
    qmin, qmax = (int(v) for v in q.qrange)
    return QDQ(q.scale, q.zero_point, qmin, qmax, axis=None)


def _lower_weight(name: str, layer: QuantWeightModule) -> nn.Module:
    try:
        scale = layer.weight_row_scales()
    except VitqError as e:
        raise VitqError(f"{name}: {e}") from None
    return QDQ(scale, torch.zeros(scale.numel(), dtype=torch.int32), -128, 127, axis=0)


def lower_for_export(model: nn.Module) -> nn.Module:
    """A copy of the frozen ``model`` whose quantizers are QDQ modules (see module docstring)."""
    if not is_frozen(model):
        raise VitqError("only a frozen model can be exported: run calibrate() and freeze() first")
    model = copy.deepcopy(model).eval()
    modules = dict(model.named_modules())

    def parent_and_attr(name: str):
        parent, _, attr = name.rpartition(".")
        return modules[parent] if parent else model, attr

    weight_layers = {n: m for n, m in quant_modules(model) if isinstance(m, QuantWeightModule)}
    for name, q in list(named_quantizers(model)):
        if q.is_weight:
            continue
        parent, attr = parent_and_attr(name)
        if parent in weight_layers.values():
            continue  # handled with its layer below
        setattr(parent, attr, _lower_activation(name, q))
    for name, layer in weight_layers.items():
        weight_q = _lower_weight(f"{name}.weight_quantizer", layer) if layer.weight_is_quantized else Off()
        lowered = ExportWeightLayer(layer, _lower_activation(f"{name}.input_quantizer", layer.input_quantizer),
                                    weight_q, _lower_activation(f"{name}.output_quantizer", layer.output_quantizer))
        parent, attr = parent_and_attr(name)
        setattr(parent, attr, lowered)
    return model


def _fold_weight_quantize(model_proto) -> int:
    """Replace QuantizeLinear nodes on constant inputs by their integer result (weights stored as int8), then drop
    what no node uses any more. Returns the number of folded nodes."""
    import onnx
    from onnx import numpy_helper

    graph = model_proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and all(i in consts for i in node.input):
            x, scale = consts[node.input[0]].astype(np.float32), consts[node.input[1]].astype(np.float32)
            zp = consts[node.input[2]] if len(node.input) > 2 else np.zeros((), np.uint8)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            zpb = zp.astype(np.int32)
            if scale.ndim == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zpb = scale.reshape(shape), zpb.reshape(shape)
            info = np.iinfo(zp.dtype)
            q = np.clip(np.rint(x * (np.float32(1.0) / scale)) + zpb, info.min, info.max).astype(zp.dtype)
            graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
        else:
            keep.append(node)
    # drop nodes and initializers nothing reads any more (the float weights that were folded)
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in keep for i in n.input} | outputs
        pruned = [n for n in keep if any(o in used for o in n.output)]
        if len(pruned) == len(keep):
            break
        keep = pruned
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input} | outputs
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    onnx.checker.check_model(model_proto)
    return folded


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model takes: its data config, else its patch embedding's image size."""
    cfg = getattr(model, "vitq_data_config", None)
    if cfg is not None:
        return tuple(cfg.input_size)
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):
        return (pe.proj.in_channels, *pe.img_size)
    raise VitqError("cannot tell the model's input size: load it with vitq.load_model")


def export_onnx(model: nn.Module, path, opset: int = 17, batch_size: int = 1) -> dict:
    """Write ``model`` (frozen) as a QDQ ONNX file with a dynamic batch axis; returns a summary of the graph."""
    import onnx

    lowered = lower_for_export(model)
    dummy = torch.zeros(batch_size, *input_shape(model))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lowered, (dummy,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    folded = _fold_weight_quantize(proto)
    onnx.save(proto, str(path))
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"path": str(path), "opset": opset, "weights_as_int8": folded, "ops": ops,
            "bytes": path.stat().st_size}


def export_float_onnx(model: nn.Module, path, opset: int = 17) -> str:
    """The float model as ONNX (the FP32 baseline for onnxruntime)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, *input_shape(model)),), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return str(path)


def onnx_session(path, threads: int | None = None):
    """An onnxruntime CPU session with full graph optimization (QDQ pairs fused into integer kernels)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_logits(session, images: torch.Tensor) -> torch.Tensor:
    """Run an exported model on a (B, C, H, W) batch."""
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
