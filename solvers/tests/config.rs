//! Configuration: every invalid value and every unknown key is an `Err` naming the field, from
//! the constructor, from `validate`, and after deserialization.

use deq_solvers::{ConfigError, SolverConfig, SolverKind, StopMode};

fn anderson(m: usize, lam: f64, beta: f64) -> SolverKind {
    SolverKind::Anderson { m, lam, beta }
}

/// The error names `field` in its field, its message and its `Display`.
fn names(err: ConfigError, field: &str) {
    assert_eq!(err.field, field, "{err}");
    assert!(err.to_string().contains(field), "{err}");
}

#[test]
fn constructor_rejects_each_invalid_value() {
    let cases: Vec<(SolverKind, usize, f64, &str)> = vec![
        (anderson(0, 1e-4, 1.0), 50, 1e-3, "m"),
        (anderson(6, -1e-4, 1.0), 50, 1e-3, "lam"),
        (anderson(6, f64::NAN, 1.0), 50, 1e-3, "lam"),
        (anderson(6, 1e-4, 0.0), 50, 1e-3, "beta"),
        (anderson(6, 1e-4, 1.5), 50, 1e-3, "beta"),
        (anderson(6, 1e-4, f64::NAN), 50, 1e-3, "beta"),
        (SolverKind::Naive { tau: 0.0 }, 50, 1e-3, "tau"),
        (SolverKind::Naive { tau: 1.01 }, 50, 1e-3, "tau"),
        (SolverKind::Broyden { memory: 0 }, 50, 1e-3, "memory"),
        (SolverKind::Broyden { memory: 5 }, 0, 1e-3, "max_iter"),
        (SolverKind::Broyden { memory: 5 }, 50, 0.0, "tol"),
        (SolverKind::Broyden { memory: 5 }, 50, -1e-3, "tol"),
        (SolverKind::Broyden { memory: 5 }, 50, f64::NAN, "tol"),
        (SolverKind::Broyden { memory: 5 }, 50, f64::INFINITY, "tol"),
    ];
    for (kind, max_iter, tol, field) in cases {
        let err = SolverConfig::new(kind.clone(), max_iter, tol, StopMode::Abs).unwrap_err();
        names(err, field);
    }
}

#[test]
fn validate_rejects_a_bad_protect_factor() {
    for protect in [1.0, 0.5, -1.0, f64::NAN] {
        let mut cfg = SolverConfig::anderson();
        cfg.protect = protect;
        names(cfg.validate().unwrap_err(), "protect");
    }
    let mut cfg = SolverConfig::broyden();
    cfg.protect = f64::INFINITY;
    cfg.validate().expect("inf disables the protective stop");
}

#[test]
fn presets_are_valid_and_documented() {
    for cfg in [
        SolverConfig::naive(),
        SolverConfig::anderson(),
        SolverConfig::broyden(),
    ] {
        cfg.validate().unwrap();
        assert_eq!(
            (cfg.max_iter, cfg.tol, cfg.stop_mode),
            (50, 1e-3, StopMode::Rel)
        );
        assert_eq!((cfg.protect, cfg.early_stop), (1e6, true));
    }
    assert_eq!(SolverConfig::anderson().kind, anderson(6, 1e-4, 1.0));
    assert_eq!(
        SolverConfig::broyden().kind,
        SolverKind::Broyden { memory: 30 }
    );
    assert_eq!(SolverConfig::naive().kind, SolverKind::Naive { tau: 1.0 });
}

#[test]
fn json_round_trips_and_fills_defaults() {
    let cfg =
        SolverConfig::from_json(r#"{"kind": {"kind": "anderson", "m": 5}, "tol": 1e-5}"#).unwrap();
    assert_eq!(cfg.kind, anderson(5, 1e-4, 1.0));
    assert_eq!(
        (cfg.max_iter, cfg.tol, cfg.stop_mode),
        (50, 1e-5, StopMode::Rel)
    );
    let mut full = SolverConfig::broyden();
    full.stop_mode = StopMode::Abs;
    full.early_stop = false;
    let text = serde_json::to_string(&full).unwrap();
    assert_eq!(SolverConfig::from_json(&text).unwrap(), full);
    assert_eq!(serde_json::from_str::<SolverConfig>(&text).unwrap(), full);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let cases = [
        (
            r#"{"kind": {"kind": "naive"}, "f_stop_mode": "rel"}"#,
            "f_stop_mode",
        ),
        (r#"{"kind": {"kind": "anderson", "tau": 0.5}}"#, "tau"),
        (
            r#"{"kind": {"kind": "broyden", "memory": 5, "ls": true}}"#,
            "ls",
        ),
        (r#"{"kind": {"kind": "newton"}}"#, "newton"),
    ];
    for (text, key) in cases {
        let err = SolverConfig::from_json(text).unwrap_err();
        assert_eq!(err.field, "json");
        assert!(err.message.contains(key), "{err}");
        let direct = serde_json::from_str::<SolverConfig>(text).unwrap_err();
        assert!(direct.to_string().contains(key), "{direct}");
    }
}

#[test]
fn invalid_values_are_rejected_after_deserialization() {
    let cases = [
        (r#"{"kind": {"kind": "anderson", "m": 0}}"#, "m"),
        (r#"{"kind": {"kind": "anderson", "lam": -1}}"#, "lam"),
        (r#"{"kind": {"kind": "anderson", "beta": 2}}"#, "beta"),
        (r#"{"kind": {"kind": "naive", "tau": 0}}"#, "tau"),
        (r#"{"kind": {"kind": "broyden", "memory": 0}}"#, "memory"),
        (
            r#"{"kind": {"kind": "broyden"}, "max_iter": 0}"#,
            "max_iter",
        ),
        (r#"{"kind": {"kind": "broyden"}, "tol": 0}"#, "tol"),
        (r#"{"kind": {"kind": "broyden"}, "tol": -1e-3}"#, "tol"),
        (r#"{"kind": {"kind": "broyden"}, "protect": 1}"#, "protect"),
    ];
    for (text, field) in cases {
        names(SolverConfig::from_json(text).unwrap_err(), field);
        // Plain serde goes through the same validation.
        let direct = serde_json::from_str::<SolverConfig>(text).unwrap_err();
        assert!(
            direct.to_string().contains(&format!("`{field}`")),
            "{direct}"
        );
    }
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for text in [
        "",
        "{",
        "[]",
        r#"{"kind": 3}"#,
        r#"{"max_iter": 5}"#,
        r#"{"kind": {"kind": "naive"}, "max_iter": -1}"#,
    ] {
        let err = SolverConfig::from_json(text).unwrap_err();
        assert_eq!(err.field, "json", "{text}: {err}");
    }
}
