//! rack-objectspace's core: everything that is not Ruby.
//!
//! - [`pipeline`]: a heap dump streamed from a pipe, redacted, summarised, gzipped.
//! - [`writer`]: the bounded, asynchronous store writer (tokio + object_store).
//! - [`store`], [`keys`], [`redact`]: store URLs, key naming, string-value redaction.
//! - [`sites`]: file, line and GC generation of traced allocations, by address.
//! - [`census`]: live objects per allocation site at every request, in batches.
//! - [`sample`]: the sampled census's random countdown of allocations.
//! - [`scan`]: the byte scanner for one `ObjectSpace.dump_all` record, shared
//!   by the capture (pipeline, redaction, spilling, annotation) and the analysis.
//! - [`analysis`]: reading dumps back and naming the sites that leak.

pub mod alloc;
pub mod analysis;
pub mod annotate;
pub mod callers;
pub mod census;
pub mod error;
pub mod inherited;
pub mod keys;
pub mod pipeline;
pub mod redact;
pub mod runtime;
pub mod sample;
pub mod scan;
pub mod sites;
pub mod spill;
pub mod store;
pub mod writer;

pub use error::{Error, Result};
