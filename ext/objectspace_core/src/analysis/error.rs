//! Why an analysis could not run. Imports none of its siblings: every
//! analysis module returns it.

/// Why an analysis could not run. Every variant names the input it is about.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// A dump that is not valid dump_all output at some line.
    #[error("{source_name}: line {line}: {message}")]
    Parse {
        source_name: String,
        line: u64,
        message: String,
    },
    /// A gzip stream that ends early: the dump was cut short.
    #[error("{source_name}: gzip stream truncated after line {line} ({bytes} bytes of JSON read); the dump was cut short")]
    Truncated {
        source_name: String,
        line: u64,
        bytes: u64,
    },
    /// An input that cannot be opened or read at all.
    #[error("{source_name}: {message}")]
    Read {
        source_name: String,
        message: String,
    },
    /// A store error (listing or fetching) or a bad store URL.
    #[error(transparent)]
    Core(#[from] crate::Error),
    /// The progress callback asked to stop (Ctrl-C in the CLI).
    #[error("interrupted")]
    Interrupted,
}

impl AnalysisError {
    /// True when the caller passed something unusable (a bad store URL).
    pub fn is_argument_error(&self) -> bool {
        matches!(self, AnalysisError::Core(e) if e.is_argument_error())
    }
}
