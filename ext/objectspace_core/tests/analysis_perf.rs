//! Parse throughput on a real dump. Not run by default (needs a big input):
//!   ANALYSIS_DUMP=tmp/bench/before.json \
//!   cargo test --release -p objectspace_core --test analysis_perf -- --ignored --nocapture

use std::time::Instant;

use objectspace_core::analysis::heap::Heap;
use objectspace_core::analysis::source::{no_progress, read_records, Input};

#[test]
#[ignore]
fn parse_throughput() {
    let Ok(path) = std::env::var("ANALYSIS_DUMP") else {
        eprintln!("set ANALYSIS_DUMP to a dump_all file");
        return;
    };
    let input = Input::Local(path.clone().into());
    // Warm the page cache.
    let _ = read_records(&input, &no_progress, |_, _| {});
    let raw = std::fs::read(&path).expect("readable");
    let t = Instant::now();
    let newlines = memchr::memchr_iter(b'\n', &raw).count();
    let mut scanned = 0u64;
    for line in raw.split(|&b| b == b'\n') {
        if let Ok(r) = objectspace_core::analysis::scan::scan(line) {
            scanned += r.memsize;
        }
    }
    println!(
        "in-memory scan of {newlines} lines: {:.3}s ({scanned})",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut n = 0u64;
    let stats =
        read_records(&input, &no_progress, |r, _| n += r.memsize & 1).expect("readable dump");
    let scan = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let heap = Heap::read(&input, &no_progress).expect("readable dump");
    let table = t.elapsed().as_secs_f64();
    let mb = stats.bytes as f64 / 1e6;
    println!(
        "{} lines, {:.0} MB: scan {:.3}s = {:.2} GB/s; into object table {:.3}s = {:.2} GB/s; {} objects ({n})",
        stats.lines,
        mb,
        scan,
        mb / scan / 1000.0,
        table,
        mb / table / 1000.0,
        heap.objects.len()
    );
}
