//! Reading heap dumps back and naming the code that leaks.
//!
//! - [`source`]: files, folders and store objects, plain or gzipped, streamed.
//! - [`heap`]: one dump as a compact object table; gem names from paths.
//! - [`address`]: address -> object index for a table; [`refs`]: references
//!   as read, before [`paths`] resolves them.
//! - [`model`]: data the analyses share (retention path steps); imports none
//!   of its siblings.
//! - [`summary`], [`diff`], [`leaks()`]: the analyses; each returns a
//!   serialisable report whose `sites` array is most significant first.
//!   [`leaks()`] reads the census ([`census`]) and, without one, the dumps
//!   ([`mod@leaks`]).
//! - [`leak_site`]: a leaking site (`LeakSite`, its endpoints and callers),
//!   shared by the analyses and [`findings`].
//! - [`findings`]: `leaks`' sites that grow together, one finding a leak.
//! - [`paths`]: what holds a site's objects (retention paths from the roots),
//!   for the sites of `diff` and `leaks`.
//!
//! Reports are plain data (serde); the CLI and the Ruby API render them.

pub mod address;
pub mod census;
pub mod diff;
pub mod findings;
pub mod heap;
pub mod leak_site;
pub mod leaks;
pub mod model;
pub mod paths;
pub mod refs;
pub mod report;
pub mod source;
pub mod summary;

pub use diff::diff;
pub use leaks::{ls, Floor, Leaks};
pub use report::{Group, Site};
pub use source::{Input, Progress};
pub use summary::summary;

use rustc_hash::FxHashMap;

/// Find the leaking sites of a session (a folder or store URL of census
/// batches and dumps). `top` = 0 keeps every leaking site. `threads` bounds
/// parallel reads.
pub fn leaks(
    source: &str,
    progress: Progress,
    top: usize,
    threads: usize,
) -> Result<Leaks, AnalysisError> {
    leaks_above(source, progress, top, threads, None)
}

/// [`leaks`], with the growing sites under `floor` counted in
/// `hidden_sites` instead of reported (and never given retention paths).
pub fn leaks_above(
    source: &str,
    progress: Progress,
    top: usize,
    threads: usize,
    floor: Option<Floor>,
) -> Result<Leaks, AnalysisError> {
    // The census, when the session has one, covers every request: it wins,
    // unless it saw too few GCs to rank anything and there are dumps to read
    // (a process whose GCs run in its dump children). Dumps stay the detail
    // view: the newest of each process gives held_by.
    if let Some(mut found) = census::leaks(source, top, floor)? {
        let session = leaks::Session::open(source).ok();
        let dumps = session.as_ref().is_some_and(|s| !s.entries.is_empty());
        if !found.sites.is_empty() || !dumps {
            if let Some(session) = session {
                let mut newest: FxHashMap<(String, u32), (u64, Input)> = FxHashMap::default();
                for e in session.entries {
                    let Some(k) = e.parsed else { continue };
                    let slot = newest
                        .entry((k.host, k.pid))
                        .or_insert((k.seq, e.input.clone()));
                    if k.seq >= slot.0 {
                        *slot = (k.seq, e.input);
                    }
                }
                let dumps = newest.into_iter().map(|(p, (_, i))| (p, i)).collect();
                leaks::attach_to_leaks(&mut found.sites, &dumps, progress, &mut found.warnings)?;
            }
            found.conclude(top);
            return Ok(found);
        }
    }
    leaks::from_dumps(source, progress, top, threads, floor)
}

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
