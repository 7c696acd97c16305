//! The f32 fast paths of `deq_autograd::float` over the whole f32 range, each at the bound
//! its documentation states.
//!
//! Every function is compared with the exactly rounded value (an f64 evaluation of the same
//! formula, exact to far below f32 precision) on: every 4099th bit pattern of the 2³² (all
//! signs and exponents, subnormal inputs included), every float in the windows where the
//! function changes regime (the overflow edge, the subnormal results, a polynomial/exp
//! switch, saturation), and the specials (±0, ±inf, NaN payloads, `±f32::MAX`). Where the
//! exact result is a normal float the error is relative; where it is subnormal it is absolute,
//! in units of `f32::MIN_POSITIVE`; an infinite exact result must come back as the same
//! infinity, and a finite one finite. `exp_f32` and `tanh_f32` are also held against
//! `f32::exp` and `f32::tanh`: the same overflow and zero edges, and values within the bound
//! plus `std`'s own rounding.

use deq_autograd::float::{
    exp_f32, gelu, sigmoid, tanh_f32, EXP_F32_REL_ERROR, GELU_F32_REL_ERROR, SIGMOID_F32_REL_ERROR,
    TANH_F32_REL_ERROR,
};

const MIN: f64 = f32::MIN_POSITIVE as f64;

/// Every float between `a` and `b` (same sign), or every `step`-th one.
fn window(a: f32, b: f32, step: usize) -> impl Iterator<Item = f32> {
    let (lo, hi) = (a.to_bits().min(b.to_bits()), a.to_bits().max(b.to_bits()));
    (lo..=hi).step_by(step).map(f32::from_bits)
}

/// The inputs of every check: a stride over all bit patterns, the specials, and the windows
/// `(a, b, step)`.
fn inputs(windows: &[(f32, f32, usize)]) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
    xs.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        -f32::from_bits(1),
        1e-40,
        -1e-40,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc0_1234),
    ]);
    for &(a, b, step) in windows {
        xs.extend(window(a, b, step));
    }
    xs
}

/// The worst errors seen, for the failure message and the printout.
#[derive(Default, Debug)]
struct Worst {
    rel: (f64, f32),
    sub: (f64, f32),
}

/// Checks `got` against `exact` (f64) for every input; `bound(x)` is the documented pair
/// (relative bound for normal results, absolute bound in units of `f32::MIN_POSITIVE` for
/// subnormal ones).
fn check(
    name: &str,
    xs: &[f32],
    got: impl Fn(f32) -> f32,
    exact: impl Fn(f64) -> f64,
    bound: impl Fn(f32) -> (f64, f64),
) -> Worst {
    let mut worst = Worst::default();
    let mut failures = Vec::new();
    for &x in xs {
        let g = got(x);
        if x.is_nan() {
            if !g.is_nan() {
                failures.push(format!("{name}(NaN {:#x}) = {g}, not NaN", x.to_bits()));
            }
            continue;
        }
        let e = exact(x as f64);
        let e32 = e as f32;
        if e32.is_infinite() || !g.is_finite() {
            if g != e32 {
                failures.push(format!(
                    "{name}({x:e} = {:#x}) = {g}, exact {e:e}",
                    x.to_bits()
                ));
            }
            continue;
        }
        let err = (g as f64 - e).abs();
        let (b_rel, b_sub) = bound(x);
        if e.abs() >= MIN {
            let rel = err / e.abs();
            if rel > worst.rel.0 {
                worst.rel = (rel, x);
            }
            if rel > b_rel {
                failures.push(format!(
                    "{name}({x:e} = {:#x}) = {g:e}, exact {e:e}: relative error {rel:.3e} > {b_rel:.3e}",
                    x.to_bits()
                ));
            }
        } else {
            let sub = err / MIN;
            if sub > worst.sub.0 {
                worst.sub = (sub, x);
            }
            if sub > b_sub {
                failures.push(format!(
                    "{name}({x:e} = {:#x}) = {g:e}, exact {e:e} (subnormal): error {sub:.3e} × MIN_POSITIVE > {b_sub:.3e}",
                    x.to_bits()
                ));
            }
        }
    }
    println!("{name}: {} inputs, worst {worst:?}", xs.len());
    assert!(
        failures.is_empty(),
        "{name}: {} failures, the first:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    worst
}

/// `got` against `std` (an f32 libm function): the same infinities and zeros, and values
/// within `bound` plus half an ulp of `std`'s own rounding (in units of `MIN_POSITIVE` below
/// it).
fn check_against_std(
    name: &str,
    xs: &[f32],
    got: impl Fn(f32) -> f32,
    std: fn(f32) -> f32,
    bound: f64,
) {
    let mut failures = Vec::new();
    for &x in xs.iter().filter(|x| !x.is_nan()) {
        let (g, s) = (got(x), std(x));
        let same_class = g.is_infinite() == s.is_infinite() && (g == 0.0) == (s == 0.0);
        let err = (g as f64 - s as f64).abs() / (s as f64).abs().max(MIN);
        if !same_class || (s.is_finite() && err > bound + f32::EPSILON as f64 / 2.0) {
            failures.push(format!(
                "{name}({x:e} = {:#x}) = {g:e}, std {s:e}",
                x.to_bits()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name} vs std: {} failures, the first:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

#[test]
fn exp_f32_is_right_over_the_whole_range() {
    // Every float at the overflow edge (ln f32::MAX = 88.7228), where results turn
    // subnormal (−87.34) and where they vanish (−103.97); every 5th one in between.
    let xs = inputs(&[
        (88.5, 89.0, 1),
        (-86.5, -88.0, 1),
        (-88.0, -103.5, 5),
        (-103.5, -104.5, 1),
    ]);
    let bound = EXP_F32_REL_ERROR as f64;
    check("exp_f32", &xs, exp_f32, f64::exp, |_| (bound, bound));
    check_against_std("exp_f32", &xs, exp_f32, f32::exp, bound);
    assert_eq!(exp_f32(f32::NEG_INFINITY).to_bits(), 0, "e^-inf is +0");
    assert_eq!(exp_f32(-103.98), 0.0);
    assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    assert_eq!(
        exp_f32(88.722_83),
        88.722_83f32.exp(),
        "the largest finite result"
    );
    assert_eq!(exp_f32(88.722_84), f32::INFINITY);
    assert_eq!(exp_f32(0.0), 1.0);
    assert_eq!(exp_f32(-0.0), 1.0);
    // Subnormal results exist (the old clamp stopped at 1.2e-38).
    let tiny = exp_f32(-100.0);
    assert!(tiny > 0.0 && tiny < f32::MIN_POSITIVE, "{tiny:e}");
}

#[test]
fn tanh_f32_is_right_over_the_whole_range() {
    // The polynomial/exp switch at ±0.3 and the saturation to ±1 near 9.
    let xs = inputs(&[
        (0.297, 0.303, 1),
        (-0.297, -0.303, 1),
        (8.5, 9.5, 3),
        (-8.5, -9.5, 3),
    ]);
    let bound = TANH_F32_REL_ERROR as f64;
    check("tanh_f32", &xs, tanh_f32, f64::tanh, |_| (bound, bound));
    check_against_std("tanh_f32", &xs, tanh_f32, f32::tanh, bound);
    assert_eq!(tanh_f32(f32::INFINITY), 1.0);
    assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
    assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(tanh_f32(1e-40), 1e-40);
}

/// σ(x) in f64 from both tails, without cancellation.
fn sigmoid_exact(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[test]
fn sigmoid_f32_is_right_over_the_whole_range() {
    // Subnormal and vanishing results on the left, saturation to 1 on the right.
    let xs = inputs(&[
        (-86.5, -88.0, 1),
        (-88.0, -103.5, 5),
        (-103.5, -104.5, 1),
        (15.5, 17.0, 3),
    ]);
    let (rel, sub) = (SIGMOID_F32_REL_ERROR as f64, EXP_F32_REL_ERROR as f64);
    check("sigmoid", &xs, sigmoid::<f32>, sigmoid_exact, |_| {
        (rel, sub)
    });
    assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
    assert_eq!(sigmoid(f32::INFINITY), 1.0);
    assert!(sigmoid(f32::NAN).is_nan());
    // Small results keep their relative accuracy (the old `1 − σ(|x|)` gave 0 or 6e-8 here).
    let s = sigmoid(-30.0f32) as f64;
    assert!((s / sigmoid_exact(-30.0) - 1.0).abs() < rel, "{s:e}");
}

/// GELU's tanh form in f64, as `x·σ(v)`.
fn gelu_exact(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return 0.0;
    }
    x * sigmoid_exact(gelu_v(x))
}

fn gelu_v(x: f64) -> f64 {
    2.0 * 0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)
}

#[test]
fn gelu_f32_is_right_over_the_whole_range() {
    // Subnormal results near −10.4 and the saturation to x on the right.
    let xs = inputs(&[(-9.5, -11.0, 2), (3.5, 4.5, 3)]);
    let factor = GELU_F32_REL_ERROR as f64;
    check("gelu", &xs, gelu::<f32>, gelu_exact, |x| {
        let b = factor * (1.0 + (-gelu_v(x as f64)).max(0.0));
        (b, b)
    });
    assert_eq!(gelu(f32::NEG_INFINITY), 0.0);
    assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
    // The old `x/2·(1 + tanh)` form returned exactly 0 here.
    let g = gelu(-6.0f32) as f64;
    assert!((g / gelu_exact(-6.0) - 1.0).abs() < 1e-5, "{g:e}");
}

/// The f64 paths are `std`'s functions with a few roundings: spot checks at the edges.
#[test]
fn f64_paths_handle_the_specials() {
    assert_eq!(sigmoid(f64::NEG_INFINITY), 0.0);
    assert_eq!(sigmoid(f64::INFINITY), 1.0);
    assert!(sigmoid(f64::NAN).is_nan());
    let s = sigmoid(-700.0f64);
    assert!((s / sigmoid_exact(-700.0) - 1.0).abs() < 1e-15, "{s:e}");
    assert_eq!(gelu(f64::NEG_INFINITY), 0.0);
    let g = gelu(-20.0f64);
    assert!((g / gelu_exact(-20.0) - 1.0).abs() < 1e-12, "{g:e}");
}
