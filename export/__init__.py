"""codefusion.export: ONNX / TensorRT export of the engine's graphs, read from one spec per graph."""
