//! Reading heap dumps back and naming the code that leaks.
//!
//! - [`source`]: files, folders and store objects, plain or gzipped, streamed;
//!   what the user typed as an input ([`input_for`]).
//! - [`error`]: why an analysis could not run ([`AnalysisError`]).
//! - [`heap`]: one dump as a compact object table; gem names from paths.
//! - [`address`]: address -> object index for a table; [`refs`]: references
//!   as read, before [`paths`] resolves them.
//! - [`model`]: data the analyses share (retention path steps); imports none
//!   of its siblings.
//! - [`report`]: the report rows (sites, groupings) every analysis returns.
//! - [`summary`], [`diff`], [`leaks()`]: the analyses; each returns a
//!   serialisable report whose `sites` array is most significant first.
//! - `leaks`, by job:
//!   - [`mod@leaks`]: the census when the session has one, else the dumps;
//!   - [`census`]: ranking from the census batches;
//!   - [`dump_leaks`]: ranking from the dumps, process by process;
//!   - [`session`]: a session's dumps and their metadata, and `ls`;
//!   - [`ranking`]: the growth rule, the noise floor, the order of sites;
//!   - [`leak_site`]: a leaking site (`LeakSite`, its endpoints and callers);
//!   - [`leak_report`]: the report (`Leaks`), whichever source ranked it;
//!   - [`leak_paths`]: retention paths for the reported sites;
//!   - [`findings`]: the sites that grow together, one finding a leak.
//! - [`paths`]: what holds a site's objects (retention paths from the roots),
//!   for the sites of `diff` and `leaks`.
//!
//! No module here imports one that imports it back: shared data sits in
//! modules that import none of the analyses ([`model`], [`report`],
//! [`leak_site`], [`error`]), and this file only declares and re-exports.
//! Reports are plain data (serde); the CLI and the Ruby API render them.

pub mod address;
pub mod census;
pub mod diff;
pub mod dump_leaks;
pub mod error;
pub mod findings;
pub mod heap;
pub mod leak_paths;
pub mod leak_report;
pub mod leak_site;
pub mod leaks;
pub mod model;
pub mod paths;
pub mod ranking;
pub mod refs;
pub mod report;
pub mod session;
pub mod source;
pub mod summary;

pub use diff::diff;
pub use error::AnalysisError;
pub use leak_report::Leaks;
pub use leaks::{leaks, leaks_with};
pub use ranking::{Floor, LeaksOptions};
pub use report::{Group, Site};
pub use session::ls;
pub use source::{input_for, local_path, Input, Progress};
pub use summary::summary;
