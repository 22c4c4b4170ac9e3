//! The core's error type. It knows nothing of Ruby and is `Send`, so it can
//! cross threads and be converted into a Ruby exception once the GVL is back.

use std::fmt;

/// Everything that can go wrong in the core, with enough context for a message
/// that says what was wrong, what was given and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store URL that cannot be used (bad syntax, unknown scheme, missing bucket).
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The store refused or failed an operation (network down, 5xx, disk full).
    #[error("store error for {key}: {message}")]
    Store { key: String, message: String },

    /// Reading or writing a local stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A dump that cannot be read, with the line where reading stopped.
    #[error("{source_name}: line {line}: {message}")]
    Parse {
        source_name: String,
        line: u64,
        message: String,
    },

    /// The writer's bounded queue is full; the dump was dropped, not buffered.
    #[error("the store queue is full ({capacity} pending); dump dropped")]
    QueueFull { capacity: usize },

    /// A pipeline or writer was used after it finished.
    #[error("{0}")]
    State(String),
}

impl Error {
    pub(crate) fn store(key: impl fmt::Display, err: impl fmt::Display) -> Self {
        Error::Store {
            key: key.to_string(),
            message: err.to_string(),
        }
    }

    /// True for errors that mean the caller passed something wrong (maps to ArgumentError).
    pub fn is_argument_error(&self) -> bool {
        matches!(self, Error::InvalidUrl { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
