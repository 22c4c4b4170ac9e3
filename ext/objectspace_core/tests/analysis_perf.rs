//! Parse throughput on a real dump, per core. Not run by default (needs a big input):
//!   ruby bench/analysis.rb   # once, to write bench/data/1200000/*.json
//!   ANALYSIS_DUMP=$PWD/bench/data/1200000/before.json \
//!   cargo test --release -p objectspace_core --test analysis_perf -- --ignored --nocapture
//!
//! Throughput is bytes over this thread's CPU time (from /proc/thread-self/schedstat),
//! so other load on the machine does not skew it; wall time is printed too.

use std::time::Instant;

use objectspace_core::analysis::heap::Heap;
use objectspace_core::analysis::source::{no_progress, read_records, Input};
use objectspace_core::scan::scan;

/// CPU time of this thread in seconds (Linux), or None.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn measure<T>(label: &str, bytes: u64, f: impl FnOnce() -> T) -> T {
    let wall = Instant::now();
    let cpu = thread_cpu();
    let out = f();
    let wall = wall.elapsed().as_secs_f64();
    let cpu = thread_cpu().zip(cpu).map(|(b, a)| b - a).unwrap_or(wall);
    println!(
        "{label}: {:.3}s CPU ({:.3}s wall) = {:.2} GB/s per core",
        cpu,
        wall,
        bytes as f64 / cpu / 1e9
    );
    out
}

#[test]
#[ignore]
fn parse_throughput() {
    let Ok(path) = std::env::var("ANALYSIS_DUMP") else {
        eprintln!("set ANALYSIS_DUMP to a dump_all file");
        return;
    };
    let input = Input::Local(path.clone().into());
    let raw = std::fs::read(&path).expect("readable");
    let bytes = raw.len() as u64;
    let lines = measure("memchr newlines only", bytes, || {
        memchr::memchr_iter(b'\n', &raw).count()
    });
    measure("scan records in memory", bytes, || {
        let mut n = 0u64;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &raw) {
            n += scan(&raw[start..end]).map(|r| r.memsize).unwrap_or(0);
            start = end + 1;
        }
        n
    });
    drop(raw);
    measure("read_records from file (mmap)", bytes, || {
        read_records(&input, &no_progress, |_, _| {}).expect("readable dump")
    });
    let heap = measure("Heap::read (object table)", bytes, || {
        Heap::read(&input, &no_progress).expect("readable dump")
    });
    println!(
        "{lines} lines, {} objects, {:.1} MB of JSON; object table {} bytes/object",
        heap.objects.len(),
        bytes as f64 / 1e6,
        std::mem::size_of_val(&heap.objects[0])
    );
}

/// What retention paths cost on a real dump: reading with references, then
/// resolving them and the search from the roots, then paths for the largest
/// sites. Same command as above, with `paths_cost`.
#[test]
#[ignore]
fn paths_cost() {
    use objectspace_core::analysis::paths::Graph;
    let Ok(path) = std::env::var("ANALYSIS_DUMP") else {
        eprintln!("set ANALYSIS_DUMP to a dump_all file");
        return;
    };
    let input = Input::Local(path.clone().into());
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    drop(measure("Heap::read", bytes, || {
        Heap::read(&input, &no_progress).expect("readable dump")
    }));
    let mut heap = measure("Heap::read_with_references", bytes, || {
        Heap::read_with_references(&input, &no_progress).expect("readable dump")
    });
    let graph = measure("Graph::build (resolve + search)", bytes, || {
        Graph::build(&mut heap).expect("references")
    });
    println!(
        "{} objects; graph {:.1} MB = {:.1} bytes/object; {} reached from outside",
        graph.len(),
        graph.bytes() as f64 / 1e6,
        graph.bytes() as f64 / graph.len() as f64,
        graph.outside
    );
    // The 10 largest sites by count.
    let mut by_site: std::collections::HashMap<(u32, u32, u16, u64), Vec<u32>> =
        std::collections::HashMap::new();
    for (i, o) in heap.objects.iter().enumerate() {
        if o.file != 0 {
            by_site
                .entry((o.file, o.line, o.ty, o.class))
                .or_default()
                .push(i as u32);
        }
    }
    let mut sites: Vec<Vec<u32>> = by_site.into_values().collect();
    sites.sort_by_key(|v| std::cmp::Reverse(v.len()));
    sites.truncate(10);
    let held = measure("held_by for the 10 largest sites", bytes, || {
        sites
            .iter()
            .map(|s| graph.held_by(&heap, s).held_by.len())
            .sum::<usize>()
    });
    println!("{held} paths");
}
