"""The inference service: the Open Inference Protocol and Predict-by-entity on ONNX Runtime,
with dynamic batching, shadow scoring, prediction logging and zero-downtime hot swaps."""
