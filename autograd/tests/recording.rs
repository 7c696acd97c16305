//! The recording switch belongs to the tape (the computation), not to the OS thread:
//! `no_grad` pauses exactly the tapes that exist when it begins, on its thread.

use deq_autograd::{gradcheck, no_grad, GradcheckOptions, Tape, Tensor, Var};
use std::sync::Mutex;

/// `Σ x²` on a fresh tape and its gradient `2x`, or `None` when nothing was recorded.
fn square_sum_gradient(values: &[f64]) -> Option<Vec<f64>> {
    let tape = Tape::new();
    let x = tape.leaf(Tensor::from_vec(values.to_vec(), &[values.len()]));
    let y = x.mul(&x).sum_all();
    if !y.is_recorded() {
        return None;
    }
    Some(tape.vjp(&[&y], &[&Tensor::scalar(1.0)], &[&x])[0].to_vec())
}

/// On a one-thread pool, a computation that waits inside rayon under `no_grad` runs another
/// computation's queued job on its own thread (what work stealing does to a worker blocked in
/// `rayon::join`). That job records on its own tape and gets its gradient. With a thread-wide
/// recording flag it recorded nothing.
#[test]
fn a_job_run_inside_another_computations_no_grad_still_records() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let stolen: Mutex<Option<Option<Vec<f64>>>> = Mutex::new(None);
    let mut yielded = None;
    let mut outer_recorded = None;
    pool.install(|| {
        rayon::scope(|s| {
            // Another computation's job, queued on the only worker.
            s.spawn(|_| *stolen.lock().unwrap() = Some(square_sum_gradient(&[1.0, -3.0])));
            // This computation pauses its own tape, then waits inside rayon: the worker runs
            // the queued job right here, inside the `no_grad`.
            let tape = Tape::new();
            let w = tape.leaf(Tensor::from_vec(vec![2.0], &[1]));
            no_grad(|| {
                yielded = rayon::yield_now();
                outer_recorded = Some(w.mul(&w).is_recorded());
            });
        });
    });
    assert_eq!(
        yielded,
        Some(rayon::Yield::Executed),
        "the queued job ran inside the no_grad"
    );
    assert_eq!(outer_recorded, Some(false), "the paused tape recorded");
    let grad = stolen.lock().unwrap().clone().expect("the job ran");
    assert_eq!(
        grad,
        Some(vec![2.0, -6.0]),
        "the job's own tape must record inside another computation's no_grad"
    );
}

/// The same with the job started by `rayon::join` from inside the `no_grad`, the pattern of
/// the kernels: the job is created inside the pause, and its tape still records.
#[test]
fn a_join_inside_no_grad_records_on_tapes_created_in_its_jobs() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (a, b) = pool.install(|| {
        no_grad(|| {
            rayon::join(
                || square_sum_gradient(&[0.5]),
                || square_sum_gradient(&[4.0]),
            )
        })
    });
    assert_eq!(a, Some(vec![1.0]));
    assert_eq!(b, Some(vec![8.0]));
}

#[test]
fn no_grad_pauses_the_tapes_that_exist_and_restores_them() {
    let tape = Tape::new();
    let x = tape.leaf(Tensor::from_vec(vec![1.5, -0.5], &[2]));
    assert!(x.requires_grad() && tape.is_recording());
    let (inside, requires) = no_grad(|| (x.exp().sum_all(), x.requires_grad()));
    assert!(!inside.is_recorded() && !requires && x.is_recorded());
    assert!(tape.is_recording(), "recording resumes after no_grad");
    assert!(x.exp().is_recorded());
    // Restored on panic too.
    let caught = std::panic::catch_unwind(|| no_grad(|| panic!("inside no_grad")));
    assert!(caught.is_err());
    assert!(tape.is_recording());
}

#[test]
fn tapes_created_inside_no_grad_record_and_nested_pauses_cover_them() {
    let outer = Tape::new();
    let w = outer.leaf(Tensor::from_vec(vec![3.0], &[1]));
    no_grad(|| {
        assert!(!w.requires_grad());
        // A computation of its own inside the pause: recorded, with its gradient.
        assert_eq!(square_sum_gradient(&[2.0]), Some(vec![4.0]));
        let inner = Tape::new();
        let x = inner.leaf(Tensor::from_vec(vec![0.25], &[1]));
        // Mixing: the paused tape's variable is a constant of the recording one.
        let y = x.mul(&w).sum_all();
        assert!(y.is_recorded() && y.tape().unwrap().same(&inner));
        let g = inner.vjp(&[&y], &[&Tensor::scalar(1.0)], &[&x]);
        assert_eq!(g[0].to_vec(), vec![3.0]);
        // A nested no_grad pauses the inner tape too, until it returns.
        no_grad(|| assert!(!x.requires_grad() && !x.mul(&x).is_recorded()));
        assert!(x.requires_grad());
        assert!(!w.requires_grad(), "the outer pause still holds");
        // A gradient check works inside no_grad.
        let report = gradcheck(
            |v: &[Var<f64>]| v[0].tanh(),
            &[Tensor::from_vec(vec![0.3, -0.7], &[2])],
            &GradcheckOptions::default(),
        );
        assert!(report.passed(), "{report}");
    });
    assert!(w.requires_grad());
}
