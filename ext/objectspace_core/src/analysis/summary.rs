//! Summary of one dump: count and memsize by type, class, gem, file, file:line.

use serde::Serialize;

use super::error::AnalysisError;
use super::heap::Heap;
use super::report::{sort_by_memsize, Groups, Site, SiteTable};
use super::source::{Input, Progress};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub command: &'static str,
    pub source: String,
    pub objects: u64,
    pub memsize: u64,
    /// Lines and bytes of JSON read.
    pub lines: u64,
    pub bytes: u64,
    pub roots: u64,
    /// Records that are not heap objects (e.g. Ruby 3.2+ SHAPE) or have no address.
    pub skipped: u64,
    /// Strings that were read lossily (invalid escapes or UTF-8).
    pub lossy_strings: u64,
    /// Wall time of the whole analysis, filled in by the caller that timed it.
    pub elapsed_ms: u64,
    /// Allocation sites (file:line, type, class), largest memsize first.
    pub sites: Vec<Site>,
    #[serde(flatten)]
    pub groups: Groups,
}

/// Summarise a dump already in memory; `top` = 0 keeps every row.
pub fn summarize(heap: &Heap, top: usize) -> Summary {
    let mut table = SiteTable::default();
    let mut memsize = 0u64;
    for o in &heap.objects {
        table.add((o.file, o.line, o.ty as u32, o.class), o.memsize as u64);
        memsize += o.memsize as u64;
    }
    let mut sites = table.rows(heap);
    sort_by_memsize(&mut sites);
    if top > 0 {
        sites.truncate(top);
    }
    let mut groups = table.groups(heap);
    groups.truncate(top);
    Summary {
        command: "summary",
        source: heap.name.clone(),
        objects: heap.objects.len() as u64,
        memsize,
        lines: heap.stats.lines,
        bytes: heap.stats.bytes,
        roots: heap.roots,
        skipped: heap.skipped,
        lossy_strings: heap.lossy(),
        elapsed_ms: 0,
        sites,
        groups,
    }
}

/// Read and summarise one dump.
pub fn summary(input: &Input, progress: Progress, top: usize) -> Result<Summary, AnalysisError> {
    // A plain file is cut at line starts and read on every core (gzip cannot be).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let heap = Heap::read_parallel(input, progress, threads)?;
    Ok(summarize(&heap, top))
}
