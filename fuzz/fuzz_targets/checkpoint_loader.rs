//! Arbitrary bytes as a checkpoint: parsing must return `Ok` or a typed error, never panic,
//! and what parses must serialise back to a checkpoint that parses identically.
#![no_main]

use deq_models::checkpoint::{checkpoint_from_bytes, checkpoint_to_bytes};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = checkpoint_from_bytes(data, Path::new("<fuzz>")) {
        let bytes = checkpoint_to_bytes(&ck).expect("a parsed checkpoint serialises");
        let again = checkpoint_from_bytes(&bytes, Path::new("<fuzz>")).expect("round trip parses");
        assert_eq!(again.tensors.len(), ck.tensors.len());
        assert_eq!(again.metadata, ck.metadata);
    }
});
