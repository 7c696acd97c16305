//! Checkpoints in the safetensors format, written atomically and validated on load.
//!
//! # Format
//!
//! The file is readable by Python's `safetensors` (`safe_open(path, "np")`):
//!
//! ```text
//! [8 bytes]  N, little-endian u64: length of the JSON header
//! [N bytes]  {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//!             "__metadata__": {"<key>": "<string>", ...}}   padded with spaces to 8·k bytes
//! [rest]     the tensors' little-endian bytes; offsets are relative to the start of this part
//! ```
//!
//! Tensors are stored contiguously in the order of [`Checkpoint::tensors`] and come back in
//! data-offset order, so a save/load round trip keeps the order and every bit (NaN payloads
//! included). Only `F32` is accepted. Model and optimizer configuration, the step counter and
//! the vocabulary ([`Checkpoint::set_vocab`]) go in the string metadata; optimizer moments are
//! ordinary tensors with a prefix chosen by the caller (e.g. `adam.m.<name>`).
//!
//! # Checksums
//!
//! Every file written here carries the metadata key [`CHECKSUM_KEY`] (`"deq.crc32"`), whose
//! string value is a JSON object: for each tensor, the CRC-32 (IEEE, the one of Python's
//! `zlib.crc32`) of its little-endian data bytes, as 8 lower-case hex digits; and under
//! `"__header__"`, the CRC-32 of the header's canonical JSON without this key (keys sorted,
//! no whitespace, `__metadata__` dropped when nothing else is in it). In Python:
//! `zlib.crc32(f.get_tensor(name).tobytes())`. So a flipped bit anywhere in the file is
//! detected: in the data by the tensor's checksum, in the header by the header's (or by the
//! JSON parser, or by the layout checks). The key is the loader's, not the caller's: it is
//! removed from [`Checkpoint::metadata`] on load, added on save, and a caller's metadata may
//! not use it.
//!
//! # Safety of writes
//!
//! [`save_checkpoint`] writes a temporary file `.<name>.tmp-<pid>-<n>` next to the target,
//! fsyncs it, renames it over the target and fsyncs the directory. The target therefore holds
//! either the old or the new checkpoint, never a partial one, and the temporary file is
//! removed on every error path.
//!
//! # Validation on load
//!
//! [`load_checkpoint`] checks the file size, the header length (at most [`MAX_HEADER_BYTES`]
//! and within the file), the JSON, each entry's keys, dtype, shape and offsets (inside the data
//! section, contiguous, non-overlapping, covering it exactly), that metadata values are
//! strings, that the header is padded with spaces only (as the safetensors format says), and
//! the checksums: a file with a `__metadata__` section must carry [`CHECKSUM_KEY`] with one
//! checksum per tensor, and every checksum must match. (A file without any metadata, as
//! another writer may produce, has no checksums to check and is read as it is.) Every failure
//! is a [`DeqError::Checkpoint`] naming the file and, where it applies, the tensor or key.
//! Values are not checked for NaN; the caller decides.

use crate::data::Vocab;
use crate::error::{DeqError, Result};
use deq_autograd::Tensor;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest accepted JSON header (100 MiB); a larger length field means a corrupt file.
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Metadata key of the vocabulary's tokens (a JSON array of strings, in id order).
pub const VOCAB_KEY: &str = "deq.vocab";

/// Metadata key of the vocabulary hash ([`Vocab::hash`] as 16 lower-case hex digits).
pub const VOCAB_HASH_KEY: &str = "deq.vocab_hash";

/// Metadata key of the checksums (see the module docs); reserved for the loader.
pub const CHECKSUM_KEY: &str = "deq.crc32";

/// The entry of [`CHECKSUM_KEY`]'s object that holds the header's checksum.
const HEADER_CHECKSUM: &str = "__header__";

/// The header key reserved for metadata by the safetensors format.
const METADATA_KEY: &str = "__metadata__";

/// A CRC-32 as stored: 8 lower-case hex digits.
fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// The canonical text of a header whose checksum entry has been removed: serde_json's
/// compact output with sorted keys, `__metadata__` dropped when empty.
fn canonical_header(mut header: Map<String, Value>) -> String {
    if let Some(Value::Object(meta)) = header.get_mut(METADATA_KEY) {
        meta.remove(CHECKSUM_KEY);
        if meta.is_empty() {
            header.remove(METADATA_KEY);
        }
    }
    Value::Object(header).to_string()
}

/// Named `f32` tensors plus string metadata: everything needed to resume or evaluate a run.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// Tensors in storage order; names must be unique, non-empty and not `__metadata__`.
    pub tensors: Vec<(String, Tensor<f32>)>,
    /// String key/value pairs (config JSON, step, vocabulary, ...).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor.
    pub fn push(&mut self, name: impl Into<String>, tensor: Tensor<f32>) {
        self.tensors.push((name.into(), tensor));
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor<f32>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensor called `name`, which must exist with exactly `shape`; otherwise a
    /// [`DeqError::Checkpoint`] for `path` naming the tensor and both shapes.
    pub fn tensor(&self, name: &str, shape: &[usize], path: &Path) -> Result<&Tensor<f32>> {
        let t = self
            .get(name)
            .ok_or_else(|| DeqError::checkpoint(path, format!("no tensor named {name:?}")))?;
        if t.shape() != shape {
            return Err(DeqError::checkpoint(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, the configuration expects {shape:?}",
                    t.shape()
                ),
            ));
        }
        Ok(t)
    }

    /// The metadata value of `key`, or a [`DeqError::Checkpoint`] for `path` naming the key.
    pub fn meta(&self, key: &str, path: &Path) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| DeqError::checkpoint(path, format!("no metadata key {key:?}")))
    }

    /// The name of the first tensor holding a NaN or infinity, if any.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.tensors
            .iter()
            .find(|(_, t)| !t.all_finite())
            .map(|(n, _)| n.as_str())
    }

    /// Stores `vocab`'s tokens and hash in the metadata ([`VOCAB_KEY`], [`VOCAB_HASH_KEY`]).
    pub fn set_vocab(&mut self, vocab: &Vocab) {
        let tokens = Value::from(vocab.tokens().to_vec());
        self.metadata
            .insert(VOCAB_KEY.to_owned(), tokens.to_string());
        self.metadata
            .insert(VOCAB_HASH_KEY.to_owned(), format!("{:016x}", vocab.hash()));
    }

    /// The vocabulary stored by [`Checkpoint::set_vocab`]: `Ok(None)` when absent, an error
    /// when malformed or when it does not match the stored hash.
    pub fn vocab(&self, path: &Path) -> Result<Option<Vocab>> {
        let Some(raw) = self.metadata.get(VOCAB_KEY) else {
            return Ok(None);
        };
        let bad = |m: String| DeqError::checkpoint(path, format!("metadata {VOCAB_KEY:?}: {m}"));
        let tokens: Vec<String> = serde_json::from_str(raw)
            .map_err(|e| bad(format!("not a JSON list of strings: {e}")))?;
        let vocab = Vocab::from_tokens(tokens).map_err(|e| bad(e.to_string()))?;
        self.check_vocab(&vocab, path)?;
        Ok(Some(vocab))
    }

    /// Ok when the stored vocabulary hash equals `vocab`'s; otherwise a
    /// [`DeqError::Checkpoint`] saying the checkpoint belongs to another vocabulary (or has
    /// no hash).
    pub fn check_vocab(&self, vocab: &Vocab, path: &Path) -> Result<()> {
        let expected = format!("{:016x}", vocab.hash());
        match self.metadata.get(VOCAB_HASH_KEY) {
            None => Err(DeqError::checkpoint(
                path,
                format!("has no vocabulary hash (metadata key {VOCAB_HASH_KEY:?})"),
            )),
            Some(stored) if *stored != expected => Err(DeqError::checkpoint(
                path,
                format!(
                    "was made with another vocabulary (hash {stored}; this data's vocabulary of \
                     {} tokens has hash {expected})",
                    vocab.len()
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Serialises `ck` to safetensors bytes (what [`save_checkpoint`] writes). Errors name
/// `path`: duplicate, empty or reserved tensor names.
fn encode(ck: &Checkpoint, path: &Path) -> Result<Vec<u8>> {
    if ck.metadata.contains_key(CHECKSUM_KEY) {
        return Err(DeqError::checkpoint(
            path,
            format!("metadata key {CHECKSUM_KEY:?} is reserved for the checksums"),
        ));
    }
    let mut header = Map::new();
    let mut seen = HashSet::new();
    let mut offset = 0usize;
    let mut data = Vec::with_capacity(4 * ck.tensors.iter().map(|(_, t)| t.numel()).sum::<usize>());
    let mut checksums = Map::new();
    for (name, t) in &ck.tensors {
        if name.is_empty() || name == METADATA_KEY {
            return Err(DeqError::checkpoint(
                path,
                format!("invalid tensor name {name:?}"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(DeqError::checkpoint(
                path,
                format!("tensor name {name:?} is used twice"),
            ));
        }
        let end = offset + 4 * t.numel();
        let mut entry = Map::new();
        entry.insert("dtype".into(), Value::from("F32"));
        entry.insert("shape".into(), Value::from(t.shape().to_vec()));
        entry.insert("data_offsets".into(), Value::from(vec![offset, end]));
        header.insert(name.clone(), Value::Object(entry));
        let begin = data.len();
        for v in t.host_values().iter() {
            data.extend_from_slice(&v.to_le_bytes());
        }
        checksums.insert(name.clone(), Value::from(crc_hex(&data[begin..])));
        offset = end;
    }
    let mut meta: Map<String, Value> = ck
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    if !meta.is_empty() {
        header.insert(METADATA_KEY.into(), Value::Object(meta.clone()));
    }
    checksums.insert(
        HEADER_CHECKSUM.into(),
        Value::from(crc_hex(canonical_header(header.clone()).as_bytes())),
    );
    meta.insert(
        CHECKSUM_KEY.into(),
        Value::from(Value::Object(checksums).to_string()),
    );
    header.insert(METADATA_KEY.into(), Value::Object(meta));
    let mut json = Value::Object(header).to_string().into_bytes();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Serialises a checkpoint to safetensors bytes in memory (see the module docs).
pub fn checkpoint_to_bytes(ck: &Checkpoint) -> Result<Vec<u8>> {
    encode(ck, Path::new("<in memory>"))
}

/// One validated header entry.
struct Entry {
    name: String,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// A non-negative integer that fits `usize`, or `None`.
fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok())
}

/// Validates one tensor entry of the header against a data section of `data_len` bytes.
fn parse_entry(name: &str, v: &Value, data_len: usize, path: &Path) -> Result<Entry> {
    let bad = |m: String| DeqError::checkpoint(path, format!("tensor {name:?}: {m}"));
    if name.is_empty() {
        return Err(bad("empty tensor name".into()));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| bad("header entry is not a JSON object".into()))?;
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(bad(format!("unknown header field {key:?}")));
    }
    let dtype = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing or non-string \"dtype\"".into()))?;
    if dtype != "F32" {
        return Err(bad(format!("dtype {dtype} is not supported (only F32)")));
    }
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| dims.iter().map(as_usize).collect::<Option<Vec<_>>>())
        .ok_or_else(|| bad("\"shape\" is not a list of non-negative integers".into()))?;
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|o| o.iter().map(as_usize).collect::<Option<Vec<_>>>())
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("\"data_offsets\" is not a pair of non-negative integers".into()))?;
    let (begin, end) = (offsets[0], offsets[1]);
    if begin > end || end > data_len {
        return Err(bad(format!(
            "data offsets [{begin}, {end}] lie outside the data section of {data_len} bytes"
        )));
    }
    let bytes = shape
        .iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    if bytes != end - begin {
        return Err(bad(format!(
            "shape {shape:?} needs {bytes} bytes of F32 but data offsets [{begin}, {end}] span {}",
            end - begin
        )));
    }
    Ok(Entry {
        name: name.to_owned(),
        shape,
        begin,
        end,
    })
}

/// Parses the `__metadata__` object: every value must be a string.
fn parse_metadata(v: &Value, path: &Path) -> Result<BTreeMap<String, String>> {
    let obj = v.as_object().ok_or_else(|| {
        DeqError::checkpoint(path, "\"__metadata__\" is not a JSON object of strings")
    })?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_owned())),
            None => Err(DeqError::checkpoint(
                path,
                format!("metadata value of {k:?} is not a string"),
            )),
        })
        .collect()
}

/// Parses and validates safetensors bytes (see the module docs); `path` labels the errors.
/// This is the entry point for fuzzing the checkpoint loader.
pub fn checkpoint_from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let bad = |m: String| DeqError::checkpoint(path, m);
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(bad(format!(
            "file is {} bytes, too short for a safetensors header (at least 8); truncated?",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes; not a checkpoint?"
        )));
    }
    if n > rest.len() as u64 {
        return Err(bad(format!(
            "header length {n} exceeds the {} bytes after the length field; truncated?",
            rest.len()
        )));
    }
    let (header, data) = rest.split_at(n as usize);
    let text =
        std::str::from_utf8(header).map_err(|e| bad(format!("header is not valid UTF-8: {e}")))?;
    let header: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let Value::Object(header) = header else {
        return Err(bad("header is not a JSON object".into()));
    };
    let trimmed = text.trim_end_matches(' ');
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return Err(bad(
            "header has bytes other than spaces around its JSON object (the format pads with \
             spaces only)"
                .into(),
        ));
    }
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(header.len());
    for (name, v) in &header {
        if name == METADATA_KEY {
            metadata = parse_metadata(v, path)?;
        } else {
            entries.push(parse_entry(name, v, data.len(), path)?);
        }
    }
    entries.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    let mut expected = 0usize;
    let mut prev: Option<&str> = None;
    for e in &entries {
        if e.begin != expected {
            let what = if e.begin < expected {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            let after = prev.map_or("the start of the data".to_owned(), |p| format!("{p:?}"));
            return Err(bad(format!(
                "tensor {:?} (data offsets [{}, {}]) {what} {after}",
                e.name, e.begin, e.end
            )));
        }
        expected = e.end;
        prev = Some(&e.name);
    }
    if expected != data.len() {
        return Err(bad(format!(
            "{} bytes of data follow the last tensor; corrupt file?",
            data.len() - expected
        )));
    }
    if header.contains_key(METADATA_KEY) {
        verify_checksums(&mut metadata, header, &entries, data, path)?;
    }
    let tensors = entries
        .into_iter()
        .map(|e| {
            let values = data[e.begin..e.end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (e.name, Tensor::from_vec(values, &e.shape))
        })
        .collect();
    Ok(Checkpoint { tensors, metadata })
}

/// Checks [`CHECKSUM_KEY`] against the header and every tensor's data, and removes it from
/// `metadata` (see the module docs).
fn verify_checksums(
    metadata: &mut BTreeMap<String, String>,
    header: Map<String, Value>,
    entries: &[Entry],
    data: &[u8],
    path: &Path,
) -> Result<()> {
    let bad = |m: String| DeqError::checkpoint(path, m);
    let raw = metadata.remove(CHECKSUM_KEY).ok_or_else(|| {
        bad(format!(
            "has metadata but no checksums (metadata key {CHECKSUM_KEY:?}); not written by \
             deq, or damaged"
        ))
    })?;
    let sums: Map<String, Value> = serde_json::from_str(&raw).map_err(|e| {
        bad(format!(
            "metadata {CHECKSUM_KEY:?} is not a JSON object of checksums: {e}"
        ))
    })?;
    let stored = |name: &str, what: &str| -> Result<&str> {
        sums.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("no checksum for {what} in {CHECKSUM_KEY:?}")))
    };
    let expected = crc_hex(canonical_header(header).as_bytes());
    if stored(HEADER_CHECKSUM, "the header")? != expected {
        return Err(bad(format!(
            "the header does not match its checksum (stored {}, computed {expected}): the \
             file is damaged",
            stored(HEADER_CHECKSUM, "the header")?
        )));
    }
    for e in entries {
        let sum = stored(&e.name, &format!("tensor {:?}", e.name))?;
        let actual = crc_hex(&data[e.begin..e.end]);
        if sum != actual {
            return Err(bad(format!(
                "tensor {:?}: data does not match its checksum (stored {sum}, computed \
                 {actual}): the file is damaged",
                e.name
            )));
        }
    }
    if let Some(extra) = sums
        .keys()
        .find(|k| *k != HEADER_CHECKSUM && !entries.iter().any(|e| &e.name == *k))
    {
        return Err(bad(format!(
            "{CHECKSUM_KEY:?} has a checksum for {extra:?}, which is not a tensor of the file"
        )));
    }
    Ok(())
}

/// Reads and validates the checkpoint at `path`. A missing or unreadable file is a
/// [`DeqError::Io`] naming the path; a malformed one a [`DeqError::Checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    let meta = fs::metadata(path).map_err(|e| DeqError::io(path, e))?;
    if !meta.is_file() {
        return Err(DeqError::checkpoint(path, "is not a regular file"));
    }
    let bytes = fs::read(path).map_err(|e| DeqError::io(path, e))?;
    checkpoint_from_bytes(&bytes, path)
}

/// Writes `ck` to `path` atomically (see the module docs).
pub fn save_checkpoint(path: &Path, ck: &Checkpoint) -> Result<()> {
    save_checkpoint_with_hook(path, ck, || Ok(()))
}

/// Distinguishes temporary files of concurrent saves within one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// [`save_checkpoint`] with `before_rename` called after the temporary file is written and
/// synced, just before it is renamed over `path`. An error from the hook aborts the save like
/// any I/O error: the temporary file is removed and `path` keeps its previous contents. Tests
/// use it to inject a failure at the worst moment.
pub fn save_checkpoint_with_hook(
    path: &Path,
    ck: &Checkpoint,
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<()> {
    let bytes = encode(ck, path)?;
    let name = path
        .file_name()
        .ok_or_else(|| DeqError::checkpoint(path, "is not a file path"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_then_rename(&tmp, path, &bytes, before_rename);
    if result.is_err() {
        // Best effort: the file may never have been created.
        let _ = fs::remove_file(&tmp);
    } else {
        sync_dir(dir);
    }
    result
}

/// Creates `tmp`, writes and syncs `bytes`, runs the hook, renames `tmp` to `path`.
fn write_then_rename(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| DeqError::io(tmp, e))?;
    file.write_all(bytes).map_err(|e| DeqError::io(tmp, e))?;
    file.sync_all().map_err(|e| DeqError::io(tmp, e))?;
    drop(file);
    before_rename().map_err(|e| DeqError::io(path, e))?;
    fs::rename(tmp, path).map_err(|e| DeqError::io(path, e))
}

/// Flushes the directory entry of a rename to disk. Best effort: some file systems refuse to
/// sync directories, and the rename itself has already succeeded.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
