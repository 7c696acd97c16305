//! Broyden's factors and work vectors come from the buffer pool without being cleared: the
//! solver must write every value before it reads it. Every pooled buffer of exactly those
//! lengths is made a NaN one first (a NaN read anywhere, even with a zero coefficient, would
//! spread into the iterate), and the
//! solve must give the same iterate, bit for bit, and the same statistics as before: with a
//! ring that fills and wraps (memory 5), with one that restarts (seed 6406 restarts, see
//! `broyden_restart.rs`), and over a batch of several samples. Its own test binary, so no
//! other test takes the poisoned buffers.

mod cells;

use cells::solve_random_transformer;
use deq_autograd::pool;
use deq_solvers::{SolveStats, SolverConfig, SolverKind, StopMode};

fn solve_cell(seed: u64, b: usize, memory: usize) -> (Vec<u64>, SolveStats) {
    let cfg = SolverConfig::new(SolverKind::Broyden { memory }, 120, 1e-12, StopMode::Abs).unwrap();
    let (z, stats) = solve_random_transformer(seed, b, &cfg);
    (z.data().iter().map(|v| v.to_bits()).collect(), stats)
}

/// Makes every pooled buffer of `len` values a NaN one, `count` of them: taken out first (so
/// the pool's demand for that length covers them and it keeps them all when they come back),
/// filled, and given back. Checked: the next buffer of that length is NaN.
fn poison(len: usize, count: usize) {
    let bufs: Vec<Vec<f64>> = (0..count).map(|_| pool::take(len)).collect();
    for mut v in bufs {
        v.fill(f64::NAN);
        pool::give(v);
    }
    let probe = pool::take::<f64>(len);
    assert!(
        probe.iter().all(|v| v.is_nan()),
        "the pool kept no NaN buffer of {len}"
    );
    pool::give(probe);
}

#[test]
fn broyden_reads_no_value_before_writing_it() {
    let n = 4 * 8;
    for (seed, b, memory) in [(3, 1, 5), (6406, 1, 40), (11, 3, 5)] {
        let (want, stats) = solve_cell(seed, b, memory);
        poison(memory.min(119) * n, 2 * b + 2);
        poison(n, 8 * b + 8);
        let (got, again) = solve_cell(seed, b, memory);
        assert!(
            got.iter().all(|&v| f64::from_bits(v).is_finite()),
            "seed {seed}: a NaN reached the iterate"
        );
        assert_eq!(got, want, "seed {seed}: the iterate changed");
        assert_eq!(
            (again.iterations, again.restarts, again.fallback_steps),
            (stats.iterations, stats.restarts, stats.fallback_steps),
            "seed {seed}"
        );
        if seed == 6406 {
            assert!(stats.restarts > 0, "seed 6406 no longer restarts");
        }
        assert!(
            stats.lowrank_pairs_max >= 5.min(memory),
            "seed {seed}: ring not filled"
        );
    }
}
