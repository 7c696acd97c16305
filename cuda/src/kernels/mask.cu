// Masking with a mask broadcast to the input: masked fill (an int 0/1 mask) and multiplication
// by a dropout mask. `d` holds the output shape and, in stride_a, the mask's broadcast strides
// (0 on broadcast axes), so element j of the output reads the mask at offsets(j).stride_a.

extern "C" __global__ void mask_fill_fwd(const real* x, const int* mask, real value, real* y,
                                         Dims d, long long len) {
    GRID_STRIDE(j, len) {
        long long im, unused_b, unused_c;
        offsets(d, j, &im, &unused_b, &unused_c);
        y[j] = mask[im] ? value : x[j];
    }
}

// dst (+)= g where the mask is false, 0 where it is true.
extern "C" __global__ void mask_fill_bwd(const real* g, const int* mask, real* dst, Dims d,
                                         long long len, int acc) {
    GRID_STRIDE(j, len) {
        long long im, unused_b, unused_c;
        offsets(d, j, &im, &unused_b, &unused_c);
        store(dst, j, mask[im] ? (real)0 : g[j], acc);
    }
}

// dst (+)= src ⊙ m (m broadcast): the dropout forward (acc = 0) and its VJP.
extern "C" __global__ void mask_mul(const real* src, const real* m, real* dst, Dims d,
                                    long long len, int acc) {
    GRID_STRIDE(j, len) {
        long long im, unused_b, unused_c;
        offsets(d, j, &im, &unused_b, &unused_c);
        store(dst, j, src[j] * m[im], acc);
    }
}
