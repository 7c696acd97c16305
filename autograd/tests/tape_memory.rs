//! Peak live heap of forward passes, measured with a counting global allocator.
//!
//! A no-grad forward through weight-tied layers keeps only live tensors, so its peak stays a
//! few activations above the weights however deep it goes; a recorded forward keeps every
//! layer's activations for the backward pass, so its peak grows with depth.

use deq_autograd::{no_grad, Rng, Tape, Tensor, Var};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns the peak live heap above the level at entry, in bytes, starting from
/// an empty buffer pool (pooled buffers stay allocated, so they count as live).
fn peak_above_entry(f: impl FnOnce()) -> usize {
    deq_autograd::pool::clear();
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

const BATCH: usize = 32;
const HIDDEN: usize = 256;
const DEPTH: usize = 20;

fn layer(z: &Var<f32>, w: &Var<f32>, b: &Var<f32>) -> Var<f32> {
    z.linear(w, Some(b)).tanh()
}

// Only one test in this binary, so no other test thread allocates while it measures.
#[test]
fn no_grad_forward_keeps_three_activations_recorded_forward_grows_with_depth() {
    // rayon's pool would allocate on first use; keep the measurement single-threaded.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .ok();
    let mut rng = Rng::new(5);
    let w_t = Tensor::<f32>::randn(&[HIDDEN, HIDDEN], 0.05, &mut rng);
    let b_t = Tensor::<f32>::randn(&[HIDDEN], 0.05, &mut rng);
    let z0 = Tensor::<f32>::randn(&[BATCH, HIDDEN], 1.0, &mut rng);
    let activation = BATCH * HIDDEN * std::mem::size_of::<f32>();
    // Warm up thread-locals and lazy statics outside the measurement.
    no_grad(|| {
        layer(
            &Var::constant(z0.clone()),
            &Var::constant(w_t.clone()),
            &Var::constant(b_t.clone()),
        )
    });

    // No-grad: the weights are leaves on a tape (as in training), recording is off.
    let tape = Tape::new();
    let w = tape.leaf(w_t.clone());
    let b = tape.leaf(b_t.clone());
    let nograd_peak_at = |depth: usize| {
        peak_above_entry(|| {
            no_grad(|| {
                let mut z = Var::constant(z0.clone());
                for _ in 0..depth {
                    z = layer(&z, &w, &b);
                }
                assert_eq!(z.shape(), &[BATCH, HIDDEN]);
            })
        })
    };
    let (nograd_two, nograd_peak) = (nograd_peak_at(2), nograd_peak_at(DEPTH));
    // Allowance for the per-tensor headers (shape, reference count) and for the matrix
    // product's packing scratch, whose size follows the machine's cache sizes (about 0.5 KiB
    // on an AMD Zen 4, about 5 KiB on CI's machine). Half an activation: a fourth live
    // activation still fails.
    let slack = activation / 2;
    assert!(
        nograd_peak <= 3 * activation + slack,
        "no-grad forward peaked at {nograd_peak} bytes above the weights; 3 activations are {}",
        3 * activation
    );
    // And it does not grow with depth: twenty layers peak where two do.
    assert!(
        nograd_peak <= nograd_two + 1024,
        "no-grad peak grew with depth: {nograd_two} B at depth 2, {nograd_peak} B at {DEPTH}"
    );

    let recorded_peak = |depth: usize| {
        peak_above_entry(|| {
            let tape = Tape::new();
            let w = tape.leaf(w_t.clone());
            let b = tape.leaf(b_t.clone());
            let mut z = tape.leaf(z0.clone());
            for _ in 0..depth {
                z = layer(&z, &w, &b);
            }
            assert!(z.is_recorded());
        })
    };
    let (shallow, deep) = (recorded_peak(DEPTH / 2), recorded_peak(DEPTH));
    assert!(
        deep >= DEPTH * activation,
        "recorded forward of depth {DEPTH} peaked at only {deep} bytes"
    );
    assert!(
        deep as f64 >= 1.8 * shallow as f64,
        "recorded peak should grow linearly with depth: {shallow} at {} vs {deep} at {DEPTH}",
        DEPTH / 2
    );
    println!(
        "activation {activation} B; no-grad peak {nograd_peak} B ({:.2} activations); \
         recorded peak {shallow} B at depth {} and {deep} B at depth {DEPTH}",
        nograd_peak as f64 / activation as f64,
        DEPTH / 2
    );
}
