// mask kernels: not written yet.
