// cross_entropy kernels: not written yet.
