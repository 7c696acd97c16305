// strided kernels: not written yet.
