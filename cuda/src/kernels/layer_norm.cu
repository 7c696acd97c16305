// layer_norm kernels: not written yet.
