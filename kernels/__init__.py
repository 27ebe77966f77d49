"""codefusion.kernels: Triton kernels, one per file, each with a pure-PyTorch oracle in reference.py.

Nothing here is imported by ``import codefusion``; backends import kernels lazily.
"""
