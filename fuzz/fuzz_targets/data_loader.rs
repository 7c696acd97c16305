//! Arbitrary bytes as a corpus file: decoding, vocabulary building and encoding must return
//! `Ok` or a typed error, never panic.
#![no_main]

use deq_models::data::{decode_text, Corpus, Level, Limits};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_line_bytes: 4096,
        max_vocab: 10_000,
        ..Limits::default()
    };
    if let Ok(text) = decode_text(data, Path::new("<fuzz>"), &limits) {
        let half = text.len() / 2;
        let (train, rest) = text.split_at(text.floor_char_boundary(half));
        for level in [Level::Word, Level::Char] {
            let _ = Corpus::from_texts_with(train, rest, rest, level, &limits);
        }
    }
});
