"""Numba kernels of the hot paths, each with a plain torch/numpy reference it is tested against.

* :mod:`nco.kernels.sampling`: fused masked sampling of the decoder's next action.
* :mod:`nco.kernels.masks`: fused feasibility masks for the environments' step.
* :mod:`nco.kernels.local_search`: granular local search that refines a solution.
* :mod:`nco.kernels.threads`: how many threads a parallel kernel call gets.
"""
