// linear kernels: not written yet.
