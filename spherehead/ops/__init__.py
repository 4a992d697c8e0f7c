"""Custom ops: CUDA kernels built on first use, each with a reference PyTorch path used on CPU."""
