// Transformer-XL's relative shift of [.., T, K] scores, by index (rows of k values, t query rows
// per [T, K] matrix, mem = k - t): dst[.., i, j] (+)= src[.., i, mem + i - j] for j <= mem + i,
// and (+)= 0 past it. Within a row the map j -> mem + i - j is its own inverse on 0..=mem+i,
// so the same kernel is the forward (acc = 0, into a fresh buffer) and the VJP (src = the
// cotangent).
extern "C" __global__ void rel_shift(const real* src, real* dst, long long len, long long t,
                                     long long k, long long mem, int acc) {
    GRID_STRIDE(p, len) {
        long long row = p / k, j = p % k, i = row % t;
        real v = j <= mem + i ? src[row * k + mem + i - j] : (real)0;
        store(dst, p, v, acc);
    }
}
