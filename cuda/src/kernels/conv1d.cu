// Causal conv1d kernels. The taps themselves are cuBLAS products on row offsets (blas.rs);
// the weight gradient sums over the batch, which row offsets cannot express (each batch
// element's rows would need a different shift), so it reads a time-shifted copy of the input.

// out[b, t, c] = t >= shift ? x[b, t - shift, c] : 0, for x and out of shape [B, time, cols]
// (len = B * time * cols); shift may exceed time (then out is all zeros).
extern "C" __global__ void conv1d_shift_rows(const real* x, real* out, long long time,
                                             long long cols, long long shift, long long len) {
    GRID_STRIDE(i, len) {
        long long t = (i / cols) % time;
        out[i] = t >= shift ? x[i - shift * cols] : (real)0;
    }
}
