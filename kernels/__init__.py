"""nco.kernels."""
