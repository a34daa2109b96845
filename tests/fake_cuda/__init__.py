"""CUDA code paths on a CPU-only torch: a stand-in CUDA runtime (fake_cuda_runtime.cpp),
the harness that loads it (harness.py) and the scenarios run on fake CUDA tensors
(scenarios.py), which tests/test_fake_cuda.py runs."""
