//! `leaks`: the census when the session has one, else the dumps.
//!
//! The census ([`super::census`]) covers every request and wins; the dumps
//! ([`super::dump_leaks`]) rank a session without one. Either way the dumps
//! stay the detail view: retention paths come from them
//! ([`super::leak_paths`]).

use super::census;
use super::dump_leaks;
use super::error::AnalysisError;
use super::leak_paths;
use super::leak_report::Leaks;
use super::ranking::LeaksOptions;
use super::session::Session;
use super::source::Progress;

/// Find the leaking sites of a session (a folder or store URL of census
/// batches and dumps). `top` = 0 keeps every leaking site. `threads` bounds
/// parallel reads. No noise floor: see [`leaks_with`].
pub fn leaks(
    source: &str,
    progress: Progress,
    top: usize,
    threads: usize,
) -> Result<Leaks, AnalysisError> {
    let options = LeaksOptions {
        top,
        threads,
        floor: None,
    };
    leaks_with(source, progress, options)
}

/// Find the leaking sites of a session as `options` ask: the census when
/// the session has one, else its dumps.
pub fn leaks_with(
    source: &str,
    progress: Progress,
    options: LeaksOptions,
) -> Result<Leaks, AnalysisError> {
    // The census, when the session has one, covers every request: it wins,
    // unless it saw too few GCs to rank anything and there are dumps to read
    // (a process whose GCs run in its dump children). Dumps stay the detail
    // view: the newest of each process gives held_by.
    if let Some(mut found) = census::leaks(source, options)? {
        let session = Session::open(source).ok();
        let dumps = session.as_ref().is_some_and(|s| !s.entries.is_empty());
        if !found.sites.is_empty() || !dumps {
            if let Some(session) = session {
                let dumps = session
                    .by_process()
                    .into_iter()
                    .filter_map(|(process, entries)| {
                        let newest = entries.into_iter().rev().find(|e| e.parsed.is_some())?;
                        Some((process, newest.input))
                    })
                    .collect();
                leak_paths::attach(&mut found.sites, &dumps, progress, &mut found.warnings)?;
            }
            found.conclude(options.top);
            return Ok(found);
        }
    }
    dump_leaks::leaks(source, progress, options)
}
