//! Vocabulary, corpus loading, validation and batchify on hand-made and bundled data.

use deq_models::data::{batchify, decode_text, Corpus, Level, Limits, Vocab, MAX_VOCAB};
use deq_models::error::DeqError;
use proptest::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir, unique per test and process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deq-models-data-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `files` (name, bytes) into a fresh scratch directory.
fn corpus_dir(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = scratch(name);
    for (file, bytes) in files {
        fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

/// The error message of a data error, asserting its kind and the path it names.
fn data_err(err: DeqError, path: &Path) -> String {
    let shown = err.to_string();
    match err {
        DeqError::Data { path: p, message } => {
            assert_eq!(p, path, "error names the wrong path: {shown}");
            assert!(shown.contains(&path.display().to_string()));
            message
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}

const GOOD: &[u8] = b"a b\n";

#[test]
fn hand_made_corpus_ids_eos_and_batches() {
    let c = Corpus::from_texts("a b c\nb c d\n", "a d\n", "c\n", Level::Word).unwrap();
    let v = &c.vocab;
    assert_eq!(v.tokens(), ["a", "b", "c", "<eos>", "d"]);
    assert_eq!((v.len(), v.eos(), v.unk()), (5, 3, None));
    assert_eq!((v.id("d"), v.id("zz"), v.token(4)), (Some(4), None, "d"));
    assert_eq!(c.train, [0, 1, 2, 3, 1, 2, 4, 3]);
    assert_eq!(c.valid, [0, 4, 3]);
    assert_eq!(c.test, [2, 3]);
    assert_eq!(v.decode(&c.train, Level::Word), "a b c\nb c d\n");

    let b = batchify(&c.train, 2).unwrap();
    assert_eq!((b.streams, b.len), (2, 4));
    assert_eq!(b.data(), [0, 1, 2, 3, 1, 2, 4, 3]);
    assert_eq!(
        (b.stream(0), b.stream(1)),
        (&[0, 1, 2, 3][..], &[1, 2, 4, 3][..])
    );
    assert_eq!(b.num_segments(2), 2);
    assert_eq!(
        b.segment(0, 2),
        Some((vec![0, 1, 1, 2], vec![1, 2, 2, 4], 2))
    );
    assert_eq!(b.segment(2, 2), Some((vec![2, 4], vec![3, 3], 1)));
    assert_eq!(b.segment(3, 2), None);
    assert_eq!(b.segment(0, 0), None);
    assert_eq!(b.segment(usize::MAX, 2), None);

    // The tail that does not fill a row is dropped: 8 tokens in 3 streams of 2.
    let b3 = batchify(&c.train, 3).unwrap();
    assert_eq!((b3.len, b3.data()), (2, &[0, 1, 2, 3, 1, 2][..]));
    assert_eq!(b3.num_segments(5), 1);
    assert_eq!(b3.segment(0, 5), Some((vec![0, 2, 1], vec![1, 3, 2], 1)));
}

#[test]
fn empty_lines_get_eos_and_crlf_is_a_line_end() {
    let c = Corpus::from_texts("x\r\n\ny z\n", "\ny\n", "x", Level::Word).unwrap();
    assert_eq!(c.vocab.tokens(), ["x", "<eos>", "y", "z"]);
    assert_eq!(c.train, [0, 1, 1, 2, 3, 1]);
    assert_eq!(c.valid, [1, 2, 1]);
    assert_eq!(c.test, [0, 1]);
    // Whitespace after the last line break is not a line (ptb.char files end with "\n ").
    let p = Path::new("x");
    assert_eq!(c.vocab.encode("x\n ", Level::Word, p).unwrap(), [0, 1]);
    assert_eq!(
        c.vocab.encode("x\n y", Level::Word, p).unwrap(),
        [0, 1, 2, 1]
    );
}

#[test]
fn unknown_tokens_map_to_unk_or_fail_naming_token_and_line() {
    let c = Corpus::from_texts("a <unk> b\n", "a\nq b\n", "b\n", Level::Word).unwrap();
    assert_eq!(c.vocab.unk(), Some(1));
    assert_eq!(c.valid, [0, 3, 1, 2, 3]);

    let err = Corpus::from_texts("a b\n", "a\nb q\n", "b\n", Level::Word).unwrap_err();
    let msg = data_err(err, Path::new("<valid text>"));
    assert!(msg.contains("line 2") && msg.contains("\"q\""), "{msg}");
}

#[test]
fn char_level_plain_text_keeps_spaces() {
    let c = Corpus::from_texts("ab a\nba\n", "a b\n", "b\n", Level::Char).unwrap();
    assert_eq!(c.vocab.tokens(), ["a", "b", " ", "<eos>"]);
    assert_eq!(c.train, [0, 1, 2, 0, 3, 1, 0, 3]);
    assert_eq!(c.valid, [0, 2, 1, 3]);
    assert_eq!(c.vocab.decode(&c.train, Level::Char), "ab a\nba\n");
}

#[test]
fn char_level_pre_spaced_symbols_drop_separators() {
    // Mikolov's ptb.char format: symbols separated by spaces, `_` between words.
    let c = Corpus::from_texts("a b _ c\nc a\n", "b _ a\n", "c\n", Level::Char).unwrap();
    assert_eq!(c.vocab.tokens(), ["a", "b", "_", "c", "<eos>"]);
    assert_eq!(c.train, [0, 1, 2, 3, 4, 3, 0, 4]);
    assert_eq!(c.valid, [1, 2, 0, 4]);
    // The choice survives a round trip through the token list (as in a checkpoint).
    let restored = Vocab::from_tokens(c.vocab.tokens().to_vec()).unwrap();
    let p = Path::new("x");
    assert_eq!(restored.encode("b _ a\n", Level::Char, p).unwrap(), c.valid);
    assert_eq!(restored.hash(), c.vocab.hash());
}

#[test]
fn vocab_hash_from_tokens_and_levels() {
    let v = Vocab::build("a b\nc\n", Level::Word);
    let same = Vocab::from_tokens(v.tokens().to_vec()).unwrap();
    assert_eq!(same, v);
    assert_eq!(same.hash(), v.hash());
    assert_ne!(Vocab::build("b a\nc\n", Level::Word).hash(), v.hash());
    // Token boundaries matter: ["ab", "c"] and ["a", "bc"] differ.
    let t = |v: &[&str]| Vocab::from_tokens(v.iter().map(|s| s.to_string()).collect()).unwrap();
    assert_ne!(
        t(&["ab", "c", "<eos>"]).hash(),
        t(&["a", "bc", "<eos>"]).hash()
    );
    assert_eq!(Vocab::build("", Level::Word).tokens(), ["<eos>"]);

    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for bad in [
        s(&[]),
        s(&["a", "b"]),
        s(&["a", "<eos>", "a"]),
        s(&["", "<eos>"]),
        s(&["a b", "<eos>"]),
    ] {
        assert!(matches!(
            Vocab::from_tokens(bad),
            Err(DeqError::Vocab { .. })
        ));
    }
    assert_eq!("char".parse::<Level>().unwrap(), Level::Char);
    assert_eq!(Level::Word.to_string(), "word");
    assert!(matches!(
        "words".parse::<Level>(),
        Err(DeqError::Config { .. })
    ));
}

#[test]
fn batchify_rejects_zero_and_too_few_tokens() {
    let ids = [1, 2, 3, 4, 5];
    let e = batchify(&ids, 0).unwrap_err();
    assert!(matches!(e, DeqError::Config { .. }) && e.to_string().contains("batch size"));
    assert!(matches!(batchify(&ids, 3), Err(DeqError::Config { .. })));
    assert!(matches!(batchify(&[], 1), Err(DeqError::Config { .. })));
    assert_eq!(batchify(&ids, 2).unwrap().len, 2);
}

#[test]
fn load_dir_finds_split_files_by_name() {
    let plain = corpus_dir(
        "names-plain",
        &[("train.txt", GOOD), ("valid.txt", GOOD), ("test.txt", GOOD)],
    );
    let ptb = corpus_dir(
        "names-ptb",
        &[
            ("ptb.train.txt", GOOD),
            ("ptb.valid.txt", GOOD),
            ("ptb.test.txt", GOOD),
            ("README.md", b"x"),
        ],
    );
    let wiki = corpus_dir(
        "names-wiki",
        &[
            ("wiki.train.tokens", GOOD),
            ("wiki.valid.tokens", GOOD),
            ("wiki.test.tokens", GOOD),
        ],
    );
    for dir in [&plain, &ptb, &wiki] {
        let c = Corpus::load_dir(dir, Level::Word).unwrap();
        assert_eq!((c.train.as_slice(), c.level), (&[0, 1, 2][..], Level::Word));
    }
    // A word and a char version side by side: the level picks.
    let both = corpus_dir(
        "names-both",
        &[
            ("ptb.train.txt", b"ab cd\n"),
            ("ptb.valid.txt", b"ab\n"),
            ("ptb.test.txt", b"cd\n"),
            ("ptb.char.train.txt", b"a b _ c d\n"),
            ("ptb.char.valid.txt", b"a b\n"),
            ("ptb.char.test.txt", b"c d\n"),
        ],
    );
    assert_eq!(Corpus::load_dir(&both, Level::Word).unwrap().vocab.len(), 3);
    assert_eq!(Corpus::load_dir(&both, Level::Char).unwrap().vocab.len(), 6);
    // Two word-level candidates are ambiguous.
    fs::write(both.join("other.train.txt"), GOOD).unwrap();
    let msg = data_err(Corpus::load_dir(&both, Level::Word).unwrap_err(), &both);
    assert!(
        msg.contains("other.train.txt") && msg.contains("ptb.train.txt"),
        "{msg}"
    );
    for d in [plain, ptb, wiki, both] {
        fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn missing_directory_or_split_names_what_was_looked_for() {
    let gone = std::env::temp_dir().join(format!(
        "deq-models-data-nonexistent-{}",
        std::process::id()
    ));
    let msg = data_err(Corpus::load_dir(&gone, Level::Word).unwrap_err(), &gone);
    assert!(msg.contains("does not exist"), "{msg}");

    let empty = scratch("empty-dir");
    let msg = data_err(Corpus::load_dir(&empty, Level::Word).unwrap_err(), &empty);
    assert!(
        msg.contains("train") && msg.contains("*.train.txt"),
        "{msg}"
    );

    let no_test = corpus_dir("no-test", &[("train.txt", GOOD), ("valid.txt", GOOD)]);
    let msg = data_err(
        Corpus::load_dir(&no_test, Level::Word).unwrap_err(),
        &no_test,
    );
    assert!(
        msg.contains("no test split") && msg.contains("test.txt"),
        "{msg}"
    );

    let file = no_test.join("train.txt");
    let msg = data_err(Corpus::load_dir(&file, Level::Word).unwrap_err(), &file);
    assert!(msg.contains("not a directory"), "{msg}");
    fs::remove_dir_all(empty).unwrap();
    fs::remove_dir_all(no_test).unwrap();
}

/// Loads a directory whose valid split is `valid` and returns the error for valid.txt.
fn bad_valid(name: &str, valid: &[u8]) -> String {
    let dir = corpus_dir(
        name,
        &[
            ("train.txt", GOOD),
            ("valid.txt", valid),
            ("test.txt", GOOD),
        ],
    );
    let err = Corpus::load_dir(&dir, Level::Word).unwrap_err();
    let msg = data_err(err, &dir.join("valid.txt"));
    fs::remove_dir_all(dir).unwrap();
    msg
}

#[test]
fn empty_and_whitespace_files_are_rejected() {
    assert!(bad_valid("empty", b"").contains("is empty"));
    assert!(bad_valid("blank", b" \n\n\t\n").contains("only whitespace"));
    let dir = corpus_dir(
        "big",
        &[
            ("train.txt", GOOD),
            ("valid.txt", b"a b a b\n"),
            ("test.txt", GOOD),
        ],
    );
    let limits = Limits {
        max_file_bytes: 4,
        ..Limits::default()
    };
    let err = Corpus::load_dir_with(&dir, Level::Word, &limits).unwrap_err();
    assert!(data_err(err, &dir.join("valid.txt")).contains("is 8 bytes, over the limit of 4"));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn binary_and_non_utf8_files_are_rejected() {
    let msg = bad_valid("nul", b"a b\nc\x00d\n");
    assert!(
        msg.contains("NUL byte at offset 5 (line 2)") && msg.contains("binary"),
        "{msg}"
    );
    let gzip = [0x1f, 0x8b, 0x08, 0x00, 0x12, 0x34, 0x56, 0x78];
    assert!(bad_valid("gzip", &gzip).contains("binary"));
    let msg = bad_valid("latin1", b"a b\ncaf\xe9\n");
    assert!(
        msg.contains("not valid UTF-8") && msg.contains("offset 7, line 2"),
        "{msg}"
    );
    // A byte-order mark is not part of the first token.
    let c = Corpus::load_dir(
        &corpus_dir(
            "bom",
            &[
                ("train.txt", b"\xef\xbb\xbfa b\n"),
                ("valid.txt", GOOD),
                ("test.txt", GOOD),
            ],
        ),
        Level::Word,
    )
    .unwrap();
    assert_eq!(c.vocab.tokens()[0], "a");
}

#[test]
fn lines_over_one_mib_are_rejected() {
    let mut ok = vec![b'a'; 1 << 20];
    ok.push(b'\n');
    assert!(decode_text(&ok, Path::new("ok"), &Limits::default()).is_ok());
    let mut long = b"a\n".to_vec();
    long.extend(std::iter::repeat_n(b'b', (1 << 20) + 1));
    let msg = bad_valid("long-line", &long);
    assert!(
        msg.contains("line 2 is 1048577 bytes") && msg.contains("1048576"),
        "{msg}"
    );
}

#[test]
fn vocabularies_over_the_limit_are_rejected() {
    // MAX_VOCAB distinct words plus <eos> is one token too many.
    let mut text = String::new();
    for i in 0..MAX_VOCAB {
        text.push_str(&format!("w{i}"));
        text.push(if i % 1000 == 999 { '\n' } else { ' ' });
    }
    let err = Corpus::from_texts(&text, "w1\n", "w2\n", Level::Word).unwrap_err();
    let msg = data_err(err, Path::new("<train text>"));
    assert!(
        msg.contains("exceeds 1000000 distinct tokens") && msg.contains("line 1000"),
        "{msg}"
    );
    // One word fewer fits exactly.
    let limits = Limits {
        max_vocab: 4,
        ..Limits::default()
    };
    assert!(Corpus::from_texts_with("a b c\n", "a\n", "b\n", Level::Word, &limits).is_ok());
    assert!(Corpus::from_texts_with("a b c d\n", "a\n", "b\n", Level::Word, &limits).is_err());
}

#[test]
fn bundled_ptb_has_the_published_counts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/ptb");
    let c = Corpus::load_dir(&dir, Level::Word).unwrap();
    assert_eq!(c.vocab.len(), 10_000);
    assert_eq!(
        (c.train.len(), c.valid.len(), c.test.len()),
        (929_589, 73_760, 82_430)
    );
    assert_eq!(
        c.vocab.eos(),
        24,
        "<eos> follows the 24 words of the first line"
    );
    assert_eq!(
        (c.vocab.token(0), c.vocab.unk().map(|u| c.vocab.token(u))),
        ("aer", Some("<unk>"))
    );
    let unk = c.vocab.unk().unwrap();
    assert_eq!(c.train.iter().filter(|&&i| i == unk).count(), 45_020);
    assert_eq!(
        c.train.iter().filter(|&&i| i == c.vocab.eos()).count(),
        42_068
    );
}

#[test]
fn char_level_ptb_style_and_plain_text() {
    // PTB-char style: symbols separated by spaces, `_` between words, a trailing "\n " at the
    // end of the file (as in ptb.char.*.txt).
    let ptb_char = "a _ c a t\nt h e _ d o g\n ";
    let c = Corpus::from_texts(ptb_char, ptb_char, ptb_char, Level::Char).unwrap();
    assert_eq!(c.vocab.id(" "), None, "separating spaces are not symbols");
    assert!(c.vocab.id("_").is_some());
    // 5 + 7 symbols and one <eos> per line; the trailing blank is not a line.
    assert_eq!(c.train.len(), 5 + 1 + 7 + 1);
    assert_eq!(
        c.vocab.len(),
        ["a", "_", "c", "t", "<eos>", "h", "e", "d", "o", "g"].len()
    );

    // Plain text at char level: every character is a token, spaces included.
    let text = "To be, or not to be\nthat is the question\n";
    let c = Corpus::from_texts(text, text, text, Level::Char).unwrap();
    assert!(c.vocab.id(" ").is_some());
    assert_eq!(c.train.len(), text.chars().count());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes as a data file never panic the loader, at either level.
    #[test]
    fn random_bytes_never_panic(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "[ab_<> \\n\\r\\t\\x00é]{0,80}".prop_map(String::into_bytes),
    ]) {
        let limits = Limits { max_line_bytes: 64, max_vocab: 16, ..Limits::default() };
        if let Ok(text) = decode_text(&bytes, Path::new("fuzz"), &limits) {
            for level in [Level::Word, Level::Char] {
                if let Ok(c) = Corpus::from_texts_with(text, text, text, level, &limits) {
                    prop_assert!(c.train.iter().all(|&i| i < c.vocab.len()));
                    prop_assert_eq!(&c.train, &c.valid);
                    let _ = batchify(&c.train, 3);
                }
            }
        }
    }
}
