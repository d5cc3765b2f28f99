"""Triton kernels of mmmila (installed as ``mmmila.kernels``)."""
