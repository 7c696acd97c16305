// Embedding: gather rows of a [vocab, dim] table by id, and the VJP that adds rows of the
// cotangent back into the table's gradient.
//
// The VJP is deterministic (no atomics): the host groups the positions by id (a "scatter
// plan", see ops/embedding.rs), and each output element sums its positions in increasing order,
// as the CPU does. Plan layout (int): offsets[n_uniq + 1], uniq[n_uniq], positions[n_ids];
// the positions of uniq[u] are positions[offsets[u] .. offsets[u + 1]].

extern "C" __global__ void embedding_gather(const real* w, const int* ids, real* out,
                                            long long n_ids, long long dim) {
    GRID_STRIDE(e, n_ids * dim) {
        long long j = e / dim, k = e - j * dim;
        out[e] = w[(long long)ids[j] * dim + k];
    }
}

// dst[uniq[u], k] (+)= Σ_p g[positions[p], k] over the positions of uniq[u]. Rows of dst whose
// id does not occur are left alone (the caller zeroes dst first when acc = 0).
extern "C" __global__ void embedding_scatter(const real* g, const int* plan, long long n_uniq,
                                             long long dim, real* dst, int acc) {
    const int* offs = plan;
    const int* uniq = plan + n_uniq + 1;
    const int* pos = uniq + n_uniq;
    GRID_STRIDE(e, n_uniq * dim) {
        long long u = e / dim, k = e - u * dim;
        real s = (real)0;
        for (int p = offs[u]; p < offs[u + 1]; ++p) s += g[(long long)pos[p] * dim + k];
        store(dst, (long long)uniq[u] * dim + k, s, acc);
    }
}
