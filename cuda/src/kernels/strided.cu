// One strided copy for every op that moves values without arithmetic (permute, narrow,
// concat, pad) and their VJPs:
//   dst[dst_off + Σ i_ax · stride_c[ax]] (+)= src[src_off + Σ i_ax · stride_a[ax]]
// for every index (i_0, ..., i_{n-1}) over d.size (stride_b unused). The host coalesces the
// axes; a destination position is written by at most one index (the ops are injective), so
// accumulating needs no atomics.

// Offsets of the row-major linear index `i` over `d.size` in stride sets a and c.
__device__ __forceinline__ void strided_offsets(const Dims& d, long long i, long long* oa,
                                                long long* oc) {
    long long a = 0, c = 0;
    for (int ax = d.ndim - 1; ax > 0; --ax) {
        long long coord = i % d.size[ax];
        i /= d.size[ax];
        a += coord * d.stride_a[ax];
        c += coord * d.stride_c[ax];
    }
    if (d.ndim > 0) {
        a += i * d.stride_a[0];
        c += i * d.stride_c[0];
    }
    *oa = a; *oc = c;
}

extern "C" __global__ void strided_copy(const real* src, long long src_off, real* dst,
                                        long long dst_off, long long n, Dims d, int acc) {
    GRID_STRIDE(i, n) {
        long long oa, oc;
        strided_offsets(d, i, &oa, &oc);
        store(dst, dst_off + oc, src[src_off + oa], acc);
    }
}
