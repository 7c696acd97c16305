// solver kernels: not written yet.
