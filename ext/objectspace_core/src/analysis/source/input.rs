//! What to read: one dump ([`Input`]), a file or a store object, and how
//! what the user typed becomes one ([`input_for`], [`local_path`]).

use std::io;
use std::path::PathBuf;

use crate::analysis::error::AnalysisError;
use crate::store::Store;

/// One dump to read.
#[derive(Clone, Debug)]
pub enum Input {
    /// A file on this machine.
    Local(PathBuf),
    /// An object in a store, by key relative to the store's prefix.
    Stored { store: Store, key: String },
}

impl Input {
    /// The name used in messages: the path, or the store URL and key.
    pub fn name(&self) -> String {
        match self {
            Input::Local(p) => p.display().to_string(),
            Input::Stored { store, key } => {
                format!("{}/{}", store.url().trim_end_matches('/'), key)
            }
        }
    }

    /// The size as stored, for progress (0 when unknown).
    pub fn stored_size(&self) -> u64 {
        match self {
            Input::Local(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Input::Stored { .. } => 0,
        }
    }

    /// Read the whole object (used for small metadata records).
    pub fn read_all(&self) -> Result<Vec<u8>, AnalysisError> {
        match self {
            Input::Local(p) => std::fs::read(p).map_err(|e| read_error(&self.name(), e)),
            Input::Stored { store, key } => {
                let bytes = crate::runtime::block_on(store.get(key))??;
                Ok(bytes.to_vec())
            }
        }
    }
}

pub(super) fn read_error(name: &str, e: io::Error) -> AnalysisError {
    let message = match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    AnalysisError::Read {
        source_name: name.to_string(),
        message,
    }
}

/// Resolve what the user typed into one input: a local path, or a store URL
/// naming one object (`s3://bucket/prefix/key.jsonl.gz`, `file://dir/x.jsonl.gz`).
pub fn input_for(spec: &str) -> Result<Input, AnalysisError> {
    if let Some(local) = local_path(spec) {
        return Ok(Input::Local(local));
    }
    // A URL: open the bucket (or memory store) and read the rest as the key.
    let (dir, key) = match spec.find("://").and_then(|at| {
        let slash = spec[at + 3..].find('/')? + at + 3;
        Some((&spec[..slash], &spec[slash + 1..]))
    }) {
        Some((dir, key)) if !key.is_empty() && !key.ends_with('/') => (dir, key),
        _ => {
            return Err(AnalysisError::Read {
                source_name: spec.to_string(),
                message: "expected a file path or a store URL ending in an object key".into(),
            })
        }
    };
    let store = crate::store::Store::open(dir)?;
    Ok(Input::Stored {
        store,
        key: key.to_string(),
    })
}

/// A local path for plain paths and `file://` URLs; `None` for other URLs.
pub fn local_path(spec: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = spec.strip_prefix("file://") {
        let rest = match rest.strip_prefix("localhost/") {
            Some(r) => format!("/{r}"),
            None => rest.to_string(),
        };
        return Some(std::path::PathBuf::from(rest));
    }
    if spec.contains("://") {
        return None;
    }
    Some(std::path::PathBuf::from(spec))
}
