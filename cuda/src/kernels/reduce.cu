// Sums and maxima over the middle axis of an [outer, len, inner] view, and their VJPs.
//
// Two layouts, both deterministic (fixed combination order, no atomics):
//   - rows (inner == 1): one block per (row, chunk of the row), threads striding along the
//     row, combined with a block reduction;
//   - cols (inner > 1): one thread per (outer, chunk, inner) output, a sequential loop down
//     the axis; adjacent threads read adjacent values.
// A long axis with few outputs is split into chunks: the first pass writes per-chunk partials
// laid out as [outer, n_chunks, inner] (rows: [rows, n_chunks]), and the same kernel, run again
// over that scratch with one chunk, combines them in chunk order.

// out[b] = scale · Σ x[row·len + r] over chunk c of row `row`, for b = row · n_chunks + c.
extern "C" __global__ void reduce_sum_rows(const real* x, real* out, long long rows,
                                           long long len, long long n_chunks, long long chunk,
                                           real scale) {
    __shared__ real scratch[32];
    long long n_blocks = rows * n_chunks;
    for (long long blk = blockIdx.x; blk < n_blocks; blk += gridDim.x) {
        long long row = blk / n_chunks, c = blk % n_chunks;
        long long r0 = c * chunk;
        long long r1 = r0 + chunk < len ? r0 + chunk : len;
        const real* xr = x + row * len;
        real s = (real)0;
        for (long long r = r0 + threadIdx.x; r < r1; r += blockDim.x) s += xr[r];
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) out[blk] = s * scale;
    }
}

// out[t] = scale · Σ x[(o·len + r)·inner + i] over chunk c, for t = (o·n_chunks + c)·inner + i.
extern "C" __global__ void reduce_sum_cols(const real* x, real* out, long long outer,
                                           long long len, long long inner, long long n_chunks,
                                           long long chunk, real scale) {
    GRID_STRIDE(t, outer * n_chunks * inner) {
        long long i = t % inner, oc = t / inner;
        long long c = oc % n_chunks, o = oc / n_chunks;
        long long r0 = c * chunk;
        long long r1 = r0 + chunk < len ? r0 + chunk : len;
        const real* xs = x + o * len * inner + i;
        real s = (real)0;
        for (long long r = r0; r < r1; ++r) s += xs[r * inner];
        out[t] = s * scale;
    }
}

// VJP of a scaled sum: dst[(o·len + l)·inner + i] (+)= g[o·inner + i] · scale.
extern "C" __global__ void reduce_sum_bwd(const real* g, real* dst, long long len,
                                          long long inner, long long n, real scale, int acc) {
    GRID_STRIDE(t, n) {
        long long i = t % inner, o = t / (len * inner);
        store(dst, t, g[o * inner + i] * scale, acc);
    }
}

// Candidate (bv, bi) beats (av, ai): larger value, or equal value at a smaller index; index
// -1 marks "no candidate yet". NaN values never become candidates (the kernels skip them).
__device__ __forceinline__ bool rd_better(real bv, int bi, real av, int ai) {
    if (bi < 0) return false;
    if (ai < 0) return true;
    return bv > av || (bv == av && bi < ai);
}

// The best (value, index) of the block, valid in thread 0. `sv`, `si` hold >= 32 entries.
__device__ void rd_block_argmax(real* v, int* i, real* sv, int* si) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        real ov = __shfl_xor_sync(0xffffffffu, *v, o);
        int oi = __shfl_xor_sync(0xffffffffu, *i, o);
        if (rd_better(ov, oi, *v, *i)) { *v = ov; *i = oi; }
    }
    __syncthreads();
    if (lane == 0) { sv[warp] = *v; si[warp] = *i; }
    __syncthreads();
    int nwarps = (blockDim.x + 31) >> 5;
    if (warp == 0) {
        *v = lane < nwarps ? sv[lane] : -DEQ_INF;
        *i = lane < nwarps ? si[lane] : -1;
        for (int o = 16; o > 0; o >>= 1) {
            real ov = __shfl_xor_sync(0xffffffffu, *v, o);
            int oi = __shfl_xor_sync(0xffffffffu, *i, o);
            if (rd_better(ov, oi, *v, *i)) { *v = ov; *i = oi; }
        }
    }
    __syncthreads();
}

// Maximum of chunk c of each row (inner == 1), for blk = row · n_chunks + c: the first
// position of the largest non-NaN value. With one chunk the result is final and follows the
// CPU scan (`v > best`, starting from element 0) exactly: a NaN first element is the result,
// other NaNs are never chosen. With several chunks (out_v, out_i) are candidates for
// reduce_max_combine (index -1: the chunk held only NaNs).
extern "C" __global__ void reduce_max_rows(const real* x, real* out_v, int* out_i,
                                           long long rows, long long len, long long n_chunks,
                                           long long chunk) {
    __shared__ real sv[32];
    __shared__ int si[32];
    long long n_blocks = rows * n_chunks;
    for (long long blk = blockIdx.x; blk < n_blocks; blk += gridDim.x) {
        long long row = blk / n_chunks, c = blk % n_chunks;
        long long r0 = c * chunk;
        long long r1 = r0 + chunk < len ? r0 + chunk : len;
        const real* xr = x + row * len;
        real bv = -DEQ_INF;
        int bi = -1;
        for (long long r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
            real v = xr[r];
            if (v == v && rd_better(v, (int)r, bv, bi)) { bv = v; bi = (int)r; }
        }
        rd_block_argmax(&bv, &bi, sv, si);
        if (threadIdx.x == 0) {
            if (n_chunks == 1 && xr[0] != xr[0]) { bv = xr[0]; bi = 0; }
            out_v[blk] = bv;
            out_i[blk] = bi;
        }
    }
}

// Combines the n_chunks candidates of each row (in chunk order) into the final maximum and
// its position, with the CPU's NaN-first rule.
extern "C" __global__ void reduce_max_combine(const real* cand_v, const int* cand_i,
                                              const real* x, real* out_v, int* out_i,
                                              long long rows, long long len,
                                              long long n_chunks) {
    GRID_STRIDE(row, rows) {
        real bv = -DEQ_INF;
        int bi = -1;
        for (long long c = 0; c < n_chunks; ++c) {
            real v = cand_v[row * n_chunks + c];
            int i = cand_i[row * n_chunks + c];
            if (rd_better(v, i, bv, bi)) { bv = v; bi = i; }
        }
        real first = x[row * len];
        if (first != first) { bv = first; bi = 0; }
        out_v[row] = bv;
        out_i[row] = bi;
    }
}

// Maximum down the axis for inner > 1: one thread per (o, i), the CPU scan exactly.
extern "C" __global__ void reduce_max_cols(const real* x, real* out_v, int* out_i,
                                           long long outer, long long len, long long inner) {
    GRID_STRIDE(t, outer * inner) {
        long long i = t % inner, o = t / inner;
        const real* xs = x + o * len * inner + i;
        real best = xs[0];
        int at = 0;
        for (long long r = 1; r < len; ++r) {
            real v = xs[r * inner];
            if (v > best) { best = v; at = (int)r; }
        }
        out_v[t] = best;
        out_i[t] = at;
    }
}

// VJP of a maximum: g[o·inner + i] goes to position argmax of the axis, zeros elsewhere
// (when not accumulating). One thread per destination element, so no write conflicts.
extern "C" __global__ void reduce_max_bwd(const real* g, const int* argmax, real* dst,
                                          long long len, long long inner, long long n, int acc) {
    GRID_STRIDE(t, n) {
        long long i = t % inner, l = (t / inner) % len, o = t / (len * inner);
        long long j = o * inner + i;
        if ((long long)argmax[j] == l) {
            dst[t] = (acc ? dst[t] : (real)0) + g[j];
        } else if (!acc) {
            dst[t] = (real)0;
        }
    }
}
