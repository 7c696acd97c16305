//! Checkpoint format, validation of corrupt files and atomic writes.

use deq_autograd::Tensor;
use deq_models::checkpoint::{
    checkpoint_from_bytes, checkpoint_to_bytes, load_checkpoint, save_checkpoint,
    save_checkpoint_with_hook, Checkpoint, CHECKSUM_KEY, MAX_HEADER_BYTES,
};
use deq_models::data::{Level, Vocab};
use deq_models::error::DeqError;
use proptest::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir, unique per test and process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deq-models-ckpt-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A checkpoint with awkward values: a scalar, NaN with a payload, ±0, infinities, subnormals.
fn sample(seed: f32) -> Checkpoint {
    let mut ck = Checkpoint::new();
    ck.push(
        "emb.weight",
        Tensor::from_fn(&[3, 4], |i| seed + i as f32 * 0.25),
    );
    ck.push(
        "odd",
        Tensor::from_vec(
            vec![
                f32::from_bits(0x7fc0_1234),
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-45,
            ],
            &[5],
        ),
    );
    ck.push("scale", Tensor::scalar(seed));
    ck.push("adam.m.emb.weight", Tensor::zeros(&[3, 4]));
    ck.metadata.insert("deq.step".into(), "42".into());
    ck.metadata
        .insert("note".into(), "quotes \" and ünïcode ✓\n".into());
    ck
}

/// Asserts two checkpoints hold the same names, shapes, bits and metadata.
fn assert_identical(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((na, ta), (nb, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(na, nb);
        assert_eq!(ta.shape(), tb.shape(), "{na}");
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(ta), bits(tb), "{na}");
    }
}

/// Builds a file from a raw JSON header and data section (as another writer might).
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The message of a checkpoint error for `path`.
fn ck_err(bytes: &[u8]) -> String {
    match checkpoint_from_bytes(bytes, Path::new("model.safetensors")) {
        Err(e @ DeqError::Checkpoint { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("checkpoint model.safetensors: "),
                "{shown}"
            );
            shown
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn round_trip_is_bit_identical() {
    let dir = scratch("round-trip");
    let path = dir.join("model.safetensors");
    let ck = sample(1.5);
    save_checkpoint(&path, &ck).unwrap();
    let back = load_checkpoint(&path).unwrap();
    assert_identical(&ck, &back);
    assert_eq!(back.get("scale").unwrap().shape(), &[] as &[usize]);
    // Saving what was loaded reproduces the file byte for byte.
    assert_eq!(
        checkpoint_to_bytes(&back).unwrap(),
        fs::read(&path).unwrap()
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn layout_follows_safetensors() {
    let mut ck = Checkpoint::new();
    ck.push("b", Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]));
    ck.push("a", Tensor::from_vec(vec![-1.0f32], &[1]));
    ck.metadata.insert("k".into(), "v".into());
    let bytes = checkpoint_to_bytes(&ck).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to a multiple of 8");
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // The checksums: CRC-32 of each tensor's bytes (zlib.crc32 in Python) and of the header.
    let sums = header["__metadata__"]
        .as_object_mut()
        .unwrap()
        .remove(CHECKSUM_KEY)
        .expect("a checksum entry");
    let sums: serde_json::Value = serde_json::from_str(sums.as_str().unwrap()).unwrap();
    assert_eq!(sums["b"], "2e3fa576", "CRC-32 of the bytes of [1.0, 2.0]");
    assert_eq!(sums["a"], "4119e94a", "CRC-32 of the bytes of [-1.0]");
    assert_eq!(sums.as_object().unwrap().len(), 3, "{sums}");
    let canonical = r#"{"__metadata__":{"k":"v"},"a":{"data_offsets":[8,12],"dtype":"F32","shape":[1]},"b":{"data_offsets":[0,8],"dtype":"F32","shape":[2,1]}}"#;
    assert_eq!(
        sums["__header__"],
        format!("{:08x}", crc32fast::hash(canonical.as_bytes()))
    );
    let expected = serde_json::json!({
        "b": {"dtype": "F32", "shape": [2, 1], "data_offsets": [0, 8]},
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
        "__metadata__": {"k": "v"},
    });
    assert_eq!(header, expected);
    let mut data = Vec::new();
    for v in [1.0f32, 2.0, -1.0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(&bytes[8 + n..], data.as_slice());
    // Storage order, not name order, comes back.
    let back = checkpoint_from_bytes(&bytes, Path::new("x")).unwrap();
    assert_eq!(back.tensors[0].0, "b");

    // A file as Python's safetensors writes it: keys in another order, no metadata, no padding.
    let py = raw_file(
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#,
        &[0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64],
    );
    let back = checkpoint_from_bytes(&py, Path::new("py")).unwrap();
    assert_eq!(back.tensors[0].0, "s");
    assert_eq!(back.get("s").unwrap().data(), &[1.0]);
    assert_eq!(back.get("w").unwrap().data(), &[2.0, 3.0]);
    assert!(back.metadata.is_empty());
}

/// Flips `mask` into byte `at` of `bytes`.
fn flipped(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= mask;
    b
}

#[test]
fn checksums_catch_every_flipped_byte() {
    let bytes = checkpoint_to_bytes(&sample(0.75)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Every bit of the data section and of the header, one at a time.
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let bad = flipped(&bytes, at, 1 << bit);
            match checkpoint_from_bytes(&bad, Path::new("model.safetensors")) {
                Err(DeqError::Checkpoint { .. }) => {}
                other => panic!("byte {at} bit {bit} (header ends at {}): {other:?}", 8 + n),
            }
        }
    }
    // The messages name the damage.
    let msg = ck_err(&flipped(&bytes, 8 + n + 5, 0x10));
    assert!(
        msg.contains("tensor \"emb.weight\": data does not match its checksum"),
        "{msg}"
    );
    let step = bytes
        .windows(4)
        .position(|w| w == b"\"42\"")
        .expect("the step in the header");
    let msg = ck_err(&flipped(&bytes, step + 2, 0x01)); // "42" -> "43"
    assert!(msg.contains("header does not match its checksum"), "{msg}");
    // Padding other than spaces.
    let mut tab = bytes.clone();
    tab[8 + n - 1] = b'\t';
    if bytes[8 + n - 1] == b' ' {
        assert!(ck_err(&tab).contains("spaces"));
    }
}

#[test]
fn metadata_without_checksums_is_refused_and_the_key_is_reserved() {
    // What another writer (or an older deq) makes: metadata but no checksum entry.
    let msg = ck_err(&raw_file(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"deq.step":"3"}}"#,
        &[0, 0, 128, 63],
    ));
    assert!(msg.contains("no checksums"), "{msg}");
    let mut ck = sample(1.0);
    ck.metadata.insert(CHECKSUM_KEY.into(), "{}".into());
    let err = checkpoint_to_bytes(&ck).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");
    // The loader removes the key: what comes back is what was saved.
    let back =
        checkpoint_from_bytes(&checkpoint_to_bytes(&sample(1.0)).unwrap(), Path::new("x")).unwrap();
    assert!(!back.metadata.contains_key(CHECKSUM_KEY));
}

#[test]
fn truncated_files_are_rejected() {
    let bytes = checkpoint_to_bytes(&sample(0.5)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let dir = scratch("truncated");
    let path = dir.join("cut.safetensors");
    for cut in [
        0,
        1,
        7,
        8,
        9,
        8 + n / 2,
        8 + n - 1,
        8 + n,
        8 + n + 3,
        bytes.len() - 4,
        bytes.len() - 1,
    ] {
        fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_checkpoint(&path).unwrap_err();
        assert!(
            matches!(err, DeqError::Checkpoint { .. }),
            "cut {cut}: {err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
    }
    assert!(ck_err(&bytes[..5]).contains("too short"));
    assert!(ck_err(&bytes[..100]).contains("truncated"));
    assert!(ck_err(&bytes[..bytes.len() - 4]).contains("outside the data section"));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn garbage_headers_are_rejected() {
    assert!(ck_err(&raw_file("not json at all!", &[])).contains("not valid JSON"));
    assert!(ck_err(&raw_file("[1, 2]  ", &[])).contains("not a JSON object"));
    assert!(ck_err(&raw_file("\u{0}\u{0}{}", &[])).contains("JSON"));
    let mut bad_utf8 = raw_file("{}", &[]);
    bad_utf8[8] = 0xff;
    assert!(ck_err(&bad_utf8).contains("UTF-8"));
    let msg = ck_err(&raw_file(r#"{"a": 3}"#, &[]));
    assert!(
        msg.contains("\"a\"") && msg.contains("not a JSON object"),
        "{msg}"
    );
    let msg = ck_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}}"#,
        &[0; 4],
    ));
    assert!(msg.contains("unknown header field \"extra\""), "{msg}");
    let msg = ck_err(&raw_file(
        r#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#,
        &[0; 4],
    ));
    assert!(msg.contains("shape"), "{msg}");
    let msg = ck_err(&raw_file(r#"{"__metadata__": {"step": 3}}"#, &[]));
    assert!(msg.contains("\"step\" is not a string"), "{msg}");
    // An empty checkpoint is valid.
    assert!(checkpoint_from_bytes(&raw_file("{}", &[]), Path::new("x"))
        .unwrap()
        .tensors
        .is_empty());
}

#[test]
fn wrong_dtype_names_tensor_and_dtype() {
    let msg = ck_err(&raw_file(
        r#"{"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}"#,
        &[0; 8],
    ));
    assert!(
        msg.contains("tensor \"w\"") && msg.contains("dtype F64"),
        "{msg}"
    );
    let msg = ck_err(&raw_file(
        r#"{"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}"#,
        &[0; 4],
    ));
    assert!(msg.contains("dtype"), "{msg}");
}

#[test]
fn bad_offsets_and_shapes_are_rejected() {
    let entry = |name: &str, shape: &str, b: usize, e: usize| {
        format!(r#""{name}": {{"dtype": "F32", "shape": {shape}, "data_offsets": [{b}, {e}]}}"#)
    };
    let one = |shape: &str, b, e, data: usize| {
        ck_err(&raw_file(
            &format!("{{{}}}", entry("t", shape, b, e)),
            &vec![0; data],
        ))
    };
    assert!(one("[2]", 0, 12, 8).contains("outside the data section of 8 bytes"));
    assert!(one("[2]", 8, 0, 8).contains("outside"));
    assert!(one("[3]", 0, 8, 8).contains("needs 12 bytes"));
    assert!(one("[1]", 4, 8, 8).contains("gap"));
    assert!(one("[1]", 0, 4, 8).contains("4 bytes of data follow"));
    assert!(one("[4294967296, 4294967296, 4294967296]", 0, 8, 8).contains("too large"));
    assert!(ck_err(&raw_file(
        r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#,
        &[0; 4]
    ))
    .contains("data_offsets"));
    let overlap = format!(
        "{{{}, {}}}",
        entry("a", "[2]", 0, 8),
        entry("b", "[2]", 4, 12)
    );
    let msg = ck_err(&raw_file(&overlap, &[0; 12]));
    assert!(
        msg.contains("\"b\"") && msg.contains("overlaps \"a\""),
        "{msg}"
    );
}

#[test]
fn huge_header_lengths_are_rejected() {
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(ck_err(&bytes).contains("exceeds the limit"));
    let mut bytes = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(ck_err(&bytes).contains("exceeds the limit"));
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(ck_err(&bytes).contains("exceeds the 2 bytes"));
}

/// Names of the files in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn failure_before_rename_keeps_the_previous_checkpoint() {
    let dir = scratch("interrupted");
    let path = dir.join("last.safetensors");
    let old = sample(1.0);
    save_checkpoint(&path, &old).unwrap();
    let old_bytes = fs::read(&path).unwrap();

    let mut wrote_temp = false;
    let err = save_checkpoint_with_hook(&path, &sample(2.0), || {
        // The new contents are complete and synced in a temporary file next to the target.
        let names = listing(&dir);
        wrote_temp = names
            .iter()
            .any(|n| n.starts_with(".last.safetensors.tmp-"));
        Err(std::io::Error::other("simulated crash"))
    })
    .unwrap_err();
    assert!(wrote_temp);
    assert!(matches!(err, DeqError::Io { .. }) && err.to_string().contains("simulated crash"));
    assert_eq!(fs::read(&path).unwrap(), old_bytes);
    assert_identical(&load_checkpoint(&path).unwrap(), &old);
    assert_eq!(
        listing(&dir),
        ["last.safetensors"],
        "no temporary file left"
    );

    // The next save goes through and replaces the file.
    save_checkpoint(&path, &sample(3.0)).unwrap();
    assert_identical(&load_checkpoint(&path).unwrap(), &sample(3.0));
    assert_eq!(listing(&dir), ["last.safetensors"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failed_saves_leave_nothing_behind() {
    let dir = scratch("failed-saves");
    // Unwritable target: the target is a directory.
    let target = dir.join("taken");
    fs::create_dir(&target).unwrap();
    assert!(save_checkpoint(&target, &sample(1.0)).is_err());
    assert_eq!(listing(&dir), ["taken"]);
    // Missing parent directory.
    let nested = dir.join("missing/model.safetensors");
    let err = save_checkpoint(&nested, &sample(1.0)).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // Duplicate or reserved names are refused before anything is written.
    let mut dup = sample(1.0);
    dup.push("scale", Tensor::scalar(0.0));
    let err = save_checkpoint(&dir.join("dup"), &dup).unwrap_err();
    assert!(err.to_string().contains("\"scale\" is used twice"), "{err}");
    let mut reserved = Checkpoint::new();
    reserved.push("__metadata__", Tensor::scalar(0.0));
    assert!(save_checkpoint(&dir.join("reserved"), &reserved).is_err());
    assert_eq!(listing(&dir), ["taken"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_file_error_names_the_path() {
    let path = std::env::temp_dir().join(format!(
        "deq-models-ckpt-absent-{}/x.safetensors",
        std::process::id()
    ));
    let err = load_checkpoint(&path).unwrap_err();
    assert!(matches!(err, DeqError::Io { .. }));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let dir = std::env::temp_dir();
    assert!(matches!(
        load_checkpoint(&dir),
        Err(DeqError::Checkpoint { .. })
    ));
}

#[test]
fn vocabulary_is_stored_and_checked() {
    let vocab = Vocab::build("a b\nc\n", Level::Word);
    let other = Vocab::build("a b\nd\n", Level::Word);
    let mut ck = sample(1.0);
    ck.set_vocab(&vocab);
    let path = Path::new("v.safetensors");
    let back = checkpoint_from_bytes(&checkpoint_to_bytes(&ck).unwrap(), path).unwrap();
    assert_eq!(back.vocab(path).unwrap(), Some(vocab.clone()));
    back.check_vocab(&vocab, path).unwrap();
    let msg = back.check_vocab(&other, path).unwrap_err().to_string();
    assert!(msg.contains("another vocabulary"), "{msg}");
    assert!(sample(1.0).check_vocab(&vocab, path).is_err());
    assert_eq!(sample(1.0).vocab(path).unwrap(), None);
    // A tampered token list no longer matches its hash.
    let mut tampered = back.clone();
    tampered
        .metadata
        .insert("deq.vocab".into(), r#"["a","b","<eos>","d"]"#.into());
    assert!(tampered.vocab(path).is_err());
    tampered.metadata.insert("deq.vocab".into(), "{".into());
    assert!(tampered.vocab(path).is_err());
    // Helpers for callers checking a checkpoint against their configuration.
    assert!(back.tensor("emb.weight", &[3, 4], path).is_ok());
    let msg = back
        .tensor("emb.weight", &[4, 3], path)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[3, 4]") && msg.contains("[4, 3]"), "{msg}");
    assert!(back.tensor("nope", &[1], path).is_err());
    assert_eq!(back.meta("deq.step", path).unwrap(), "42");
    assert!(back.meta("nope", path).is_err());
    assert_eq!(back.first_non_finite(), Some("odd"));
}

/// Tensors with random names-in-order, shapes (empty dimensions included) and any f32 bits.
fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
    let tensor = proptest::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        proptest::collection::vec(any::<u32>(), n).prop_map(move |bits| {
            Tensor::from_vec(bits.into_iter().map(f32::from_bits).collect(), &shape)
        })
    });
    let tensors = proptest::collection::vec(tensor, 0..6);
    let meta = proptest::collection::btree_map("[a-z.é\"\\\\]{1,8}", ".{0,12}", 0..4);
    (tensors, meta).prop_map(|(tensors, metadata)| Checkpoint {
        tensors: tensors
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("t{i:02}"), t))
            .collect(),
        metadata,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_round_trip(ck in arb_checkpoint()) {
        let bytes = checkpoint_to_bytes(&ck).unwrap();
        let back = checkpoint_from_bytes(&bytes, Path::new("p")).unwrap();
        assert_identical(&ck, &back);
    }

    /// Flipped bits in the tensor data alone (which no layout check can see) are named
    /// errors: the checksums catch every one.
    #[test]
    fn prop_flipped_data_bytes_are_named_errors(
        ck in arb_checkpoint(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        let original = checkpoint_to_bytes(&ck).unwrap();
        let n = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
        let data = 8 + n..original.len();
        prop_assume!(!data.is_empty());
        let mut bytes = original.clone();
        for (at, mask) in flips {
            bytes[data.start + at.index(data.len())] ^= mask;
        }
        prop_assume!(bytes != original);
        match checkpoint_from_bytes(&bytes, Path::new("p")) {
            Err(e @ DeqError::Checkpoint { .. }) => {
                prop_assert!(e.to_string().contains("does not match its checksum"), "{}", e);
            }
            other => prop_assert!(false, "undetected corruption: {:?}", other.map(|c| c.metadata)),
        }
    }

    /// Random byte corruption and truncation never panic, and every one of them (a flipped
    /// data byte included) is a checkpoint error naming the file.
    #[test]
    fn prop_corruption_never_panics(
        ck in arb_checkpoint(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let original = checkpoint_to_bytes(&ck).unwrap();
        let mut bytes = original.clone();
        for (at, mask) in edits {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        // Edits of one byte can cancel, and a cut can keep everything.
        prop_assume!(bytes != original);
        match checkpoint_from_bytes(&bytes, Path::new("p")) {
            Err(e @ DeqError::Checkpoint { .. }) => {
                prop_assert!(e.to_string().starts_with("checkpoint p: "), "{}", e);
            }
            other => prop_assert!(false, "undetected corruption: {:?}", other.map(|c| c.metadata)),
        }
    }
}
