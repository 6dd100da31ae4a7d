"""Substrate fields: diffusion, decay, vessel supply, uptake and sources on the voxel grid.

- ``layout``: the packed coefficient vector and the arithmetic every backend follows (the contract)
- ``reference``: a slow pure-NumPy implementation of that contract (the executable specification)
- ``coefficients``: per-substrate plans (method, automatic sub-steps, coefficients) from the config
- ``cpu_kernels`` / ``cuda_kernels``: LOD and explicit kernels (numba; CUDA C in ``kernels/fields.cu``)
- ``steady``, ``mg_cpu`` / ``mg_cuda``: the multigrid steady-state solver (``kernels/multigrid.cu``)
- ``solver``: the simulation operation that advances every substrate by one step
"""
