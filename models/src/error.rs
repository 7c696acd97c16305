//! Typed errors for everything `deq-models` reads or writes.
//!
//! Every failure that bad input can cause (a missing or binary data file, a truncated
//! checkpoint, a mistyped setting) is a [`DeqError`] value, never a panic, so the CLI can print
//! one clear line naming the file or field and exit with status 2.

use std::fmt;
use std::path::PathBuf;

/// A failure caused by input or the environment, with enough context to fix it.
#[derive(Debug)]
pub enum DeqError {
    /// An operating-system I/O call on `path` failed (open, read, write, rename, sync).
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A data file (or in-memory text standing for one) is unusable: missing, empty, binary,
    /// not UTF-8, a line too long, too many distinct tokens, an unknown token.
    Data {
        /// The file the problem is in (or a label such as `<valid text>`).
        path: PathBuf,
        /// What is wrong, naming the line or token where that helps.
        message: String,
    },
    /// A checkpoint file is malformed or does not fit what the caller expects.
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong, naming the tensor or metadata key where that helps.
        message: String,
    },
    /// A setting is invalid: zero or negative size, unknown key or preset, bad value.
    Config {
        /// What is wrong, naming the setting.
        message: String,
    },
    /// A vocabulary is invalid (duplicate or empty tokens, no `<eos>`, too large).
    Vocab {
        /// What is wrong.
        message: String,
    },
    /// Training cannot go on (e.g. a non-finite streak with no checkpoint of the run's own to
    /// reload).
    Training {
        /// Why, and what to change.
        message: String,
    },
    /// The requested compute device cannot be used (no CUDA driver, no such device, a build
    /// without CUDA).
    Device {
        /// Why, as the backend reports it.
        message: String,
    },
}

/// `Result` with [`DeqError`] as the error type.
pub type Result<T> = std::result::Result<T, DeqError>;

impl DeqError {
    /// An [`DeqError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DeqError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`DeqError::Data`] for `path`.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DeqError::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A [`DeqError::Checkpoint`] for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DeqError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A [`DeqError::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        DeqError::Config {
            message: message.into(),
        }
    }

    /// A [`DeqError::Training`].
    pub fn training(message: impl Into<String>) -> Self {
        DeqError::Training {
            message: message.into(),
        }
    }

    /// A [`DeqError::Vocab`].
    pub fn vocab(message: impl Into<String>) -> Self {
        DeqError::Vocab {
            message: message.into(),
        }
    }
}

impl From<deq_autograd::device::DeviceError> for DeqError {
    fn from(e: deq_autograd::device::DeviceError) -> Self {
        DeqError::Device { message: e.0 }
    }
}

impl fmt::Display for DeqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeqError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            DeqError::Data { path, message } => write!(f, "{}: {}", path.display(), message),
            DeqError::Checkpoint { path, message } => {
                write!(f, "checkpoint {}: {}", path.display(), message)
            }
            DeqError::Config { message } => write!(f, "invalid configuration: {message}"),
            DeqError::Vocab { message } => write!(f, "invalid vocabulary: {message}"),
            DeqError::Training { message } => write!(f, "training stopped: {message}"),
            DeqError::Device { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for DeqError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeqError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
