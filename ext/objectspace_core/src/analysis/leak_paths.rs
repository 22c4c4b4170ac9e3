//! Retention paths for the sites `leaks` reports: each process's dump is
//! read again with references and its sites' objects traced back to what
//! holds them ([`super::paths`]).

use rustc_hash::FxHashMap;

use super::error::AnalysisError;
use super::heap::Heap;
use super::leak_site::LeakSite;
use super::paths;
use super::source::{Input, Progress};

/// Give the leaking sites their paths: for each process with a site in
/// `sites`, its last full dump is read again with references (or its last
/// dump when none is full: a retained dump, whose paths start outside it).
/// A dump that cannot be read leaves its sites without paths, with a warning.
pub fn attach(
    sites: &mut [LeakSite],
    dumps: &FxHashMap<(String, u32), Input>,
    progress: Progress,
    warnings: &mut Vec<String>,
) -> Result<(), AnalysisError> {
    let mut by_process: FxHashMap<(String, u32), Vec<usize>> = FxHashMap::default();
    for (i, s) in sites.iter().enumerate().take(paths::MAX_SITES) {
        by_process
            .entry((s.host.clone(), s.pid))
            .or_default()
            .push(i);
    }
    let mut processes: Vec<_> = by_process.into_iter().collect();
    processes.sort();
    for (process, wanted) in processes {
        let Some(input) = dumps.get(&process) else {
            continue;
        };
        let mut heap = match Heap::read_with_references(input, progress) {
            Ok(h) => h,
            Err(AnalysisError::Interrupted) => return Err(AnalysisError::Interrupted),
            Err(e) => {
                warnings.push(format!(
                    "no retention paths for {}/{}: {e}",
                    process.0, process.1
                ));
                continue;
            }
        };
        let members = paths::members_of(&heap, wanted.iter().map(|&i| &sites[i].site));
        let Some(graph) = paths::Graph::build(&mut heap) else {
            continue;
        };
        for (&i, objects) in wanted.iter().zip(&members) {
            sites[i].site.paths = Some(graph.held_by(&heap, objects));
        }
    }
    Ok(())
}
