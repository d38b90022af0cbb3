"""Export of frozen vitq models to formats that run in real low precision (ONNX QDQ for onnxruntime)."""
from .onnx import export_float_onnx, export_onnx, lower_for_export, onnx_logits, onnx_session

__all__ = ["export_float_onnx", "export_onnx", "lower_for_export", "onnx_logits", "onnx_session"]
