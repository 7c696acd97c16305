// broadcast kernels: not written yet.
