// conv1d kernels: not written yet.
