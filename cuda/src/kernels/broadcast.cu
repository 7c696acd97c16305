// Binary element-wise ops (+ - * /) with NumPy broadcasting, and their VJPs.
//
// `kind` codes match `BinaryKind` in ops/broadcast.rs: 0 add, 1 sub, 2 mul, 3 div. The host
// coalesces the axes (size-1 axes dropped, neighbours merged where every stride set is
// contiguous across them), so a `Dims` holds few axes; stride 0 marks an axis along which an
// operand is broadcast. Stride sets: a = operand a, b = operand b, c = the output / cotangent.
//
// The VJP of an operand sums over the axes it was broadcast along ("reduced" axes), one
// destination element at a time, without atomics (deterministic):
//   - broadcast_bwd_cols: one thread per (destination element, chunk of the reduced positions);
//     with one chunk it writes the destination, else partial sums that broadcast_sum_chunks adds
//     up in chunk order. Adjacent threads read adjacent cotangent values when the innermost
//     axis is kept.
//   - broadcast_bwd_rows: one block per destination element, the threads striding over the
//     reduced positions (for an innermost reduced axis, where those positions are adjacent).

// Offsets of the row-major linear index `i` over `d.size` in the three stride sets. The
// outermost axis takes the remaining quotient (i < Π size), so it needs no modulo.
__device__ __forceinline__ void bc_offsets(const Dims& d, long long i, long long* oa,
                                           long long* ob, long long* oc) {
    long long a = 0, b = 0, c = 0;
    for (int ax = d.ndim - 1; ax > 0; --ax) {
        long long coord = i % d.size[ax];
        i /= d.size[ax];
        a += coord * d.stride_a[ax];
        b += coord * d.stride_b[ax];
        c += coord * d.stride_c[ax];
    }
    if (d.ndim > 0) {
        a += i * d.stride_a[0];
        b += i * d.stride_b[0];
        c += i * d.stride_c[0];
    }
    *oa = a; *ob = b; *oc = c;
}

__device__ __forceinline__ real bc_apply(int kind, real a, real b) {
    switch (kind) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        default: return a / b;
    }
}

// g · ∂(a op b)/∂a (k = 0) or g · ∂(a op b)/∂b (k = 1), as the CPU `Kind::partial`.
__device__ __forceinline__ real bc_partial(int kind, int k, real g, real a, real b) {
    switch (kind) {
        case 0: return g;
        case 1: return k == 0 ? g : -g;
        case 2: return k == 0 ? g * b : g * a;
        default: return k == 0 ? g / b : -g * a / (b * b);
    }
}

// Whether the partial of input k reads a / b (add and sub read neither).
__device__ __forceinline__ bool bc_reads_a(int kind, int k) { return kind >= 2 && k == 1; }
__device__ __forceinline__ bool bc_reads_b(int kind, int k) {
    return (kind == 2 && k == 0) || kind == 3;
}

// out[i] = a[...] op b[...] over the output shape `d` (stride_c unused: out is contiguous).
extern "C" __global__ void broadcast_fwd(int kind, const real* a, const real* b, real* out,
                                         long long n, Dims d) {
    GRID_STRIDE(i, n) {
        long long oa, ob, oc;
        bc_offsets(d, i, &oa, &ob, &oc);
        out[i] = bc_apply(kind, a[oa], b[ob]);
    }
}

// The sum of the partials of input k over reduced positions [r0, r1) of one destination
// element whose kept-axis offsets are (oa, ob, og).
__device__ __forceinline__ real bc_partial_sum(int kind, int k, const real* g, const real* a,
                                               const real* b, const Dims& red, long long oa,
                                               long long ob, long long og, long long r0,
                                               long long r1, long long step) {
    bool ra = bc_reads_a(kind, k), rb = bc_reads_b(kind, k);
    real s = (real)0;
    for (long long r = r0; r < r1; r += step) {
        long long pa, pb, pg;
        bc_offsets(red, r, &pa, &pb, &pg);
        real av = ra ? a[oa + pa] : (real)0;
        real bv = rb ? b[ob + pb] : (real)0;
        s += bc_partial(kind, k, g[og + pg], av, bv);
    }
    return s;
}

// Thread t handles destination element j = t % n_dst and chunk c = t / n_dst of the reduced
// positions (chunk `chunk` long). out[t] (+)= the chunk's sum: with one chunk `out` is the
// destination (acc as given); with several it is a [n_chunks, n_dst] scratch (acc = 0).
extern "C" __global__ void broadcast_bwd_cols(int kind, int k, const real* g, const real* a,
                                              const real* b, real* out, long long n_dst,
                                              long long n_chunks, long long chunk,
                                              long long red_len, Dims kept, Dims red,
                                              int acc) {
    GRID_STRIDE(t, n_dst * n_chunks) {
        long long j = t % n_dst, c = t / n_dst;
        long long oa, ob, og;
        bc_offsets(kept, j, &oa, &ob, &og);
        long long r0 = c * chunk;
        long long r1 = r0 + chunk < red_len ? r0 + chunk : red_len;
        store(out, t, bc_partial_sum(kind, k, g, a, b, red, oa, ob, og, r0, r1, 1), acc);
    }
}

// dst[j] (+)= Σ_c part[c * n_dst + j], chunks in order.
extern "C" __global__ void broadcast_sum_chunks(const real* part, long long n_chunks,
                                                long long n_dst, real* dst, int acc) {
    GRID_STRIDE(j, n_dst) {
        real s = (real)0;
        for (long long c = 0; c < n_chunks; ++c) s += part[c * n_dst + j];
        store(dst, j, s, acc);
    }
}

// One block per destination element j (grid-stride over j); the block's threads stride over
// the red_len reduced positions and combine with block_sum.
extern "C" __global__ void broadcast_bwd_rows(int kind, int k, const real* g, const real* a,
                                              const real* b, real* dst, long long n_dst,
                                              long long red_len, Dims kept, Dims red, int acc) {
    __shared__ real scratch[32];
    for (long long j = blockIdx.x; j < n_dst; j += gridDim.x) {
        long long oa, ob, og;
        bc_offsets(kept, j, &oa, &ob, &og);
        real s = bc_partial_sum(kind, k, g, a, b, red, oa, ob, og, (long long)threadIdx.x,
                                red_len, (long long)blockDim.x);
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) store(dst, j, s, acc);
    }
}
