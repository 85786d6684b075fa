"""From image bytes to feature vectors: bounded decoding, backbones and their weights, feature recipes, the
ONNX export and the engines that run it (ONNX Runtime, torch, CUDA), and the training feature cache."""
