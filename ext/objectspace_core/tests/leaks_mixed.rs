//! `leaks` over a session of `dump: :retained` dumps plus a full dump taken for
//! retention paths: the full dump counts only what a retained dump would have
//! (objects allocated since the baseline generation), so the older objects it
//! also holds do not look like a jump in the last point of every series.

use std::io::Write;
use std::path::Path;

use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self};

const STRING_CLASS: &str = "0x7f0000000010";
const BASELINE: u32 = 10;

fn string_at(addr: u64, file: &str, line: u32, generation: Option<u32>) -> String {
    let generation = generation.map_or(String::new(), |g| format!(", \"generation\":{g}"));
    format!(
        r#"{{"address":"0x{addr:x}", "type":"STRING", "class":"{STRING_CLASS}", "bytesize":5, "file":"{file}", "line":{line}{generation}, "memsize":40}}"#
    )
}

fn write_gz(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn meta(seq: u64, kind: &str, gc_generation: u32) -> String {
    let baseline = if kind == "retained" {
        BASELINE.to_string()
    } else {
        "null".to_string()
    };
    format!(
        r#"{{"version":1,"host":"web-1","pid":7,"seq":{seq},"request":{{"method":"GET","path":"/leak","status":200}},"gc_generation":{gc_generation},"requests":{seq},"baseline_generation":{baseline},"dump":"{kind}"}}"#
    )
}

/// `retained` retained dumps (each request leaks 2 strings at leaky.rb:5),
/// then one full dump: the same leak plus 50 older objects at each of 30
/// boot-time sites and some untraced objects.
fn session(dir: &Path, retained: u64) {
    let mut leaked = Vec::new();
    let stem = |seq: u64| {
        format!(
            "web-1/7/{seq:06}-{}-GET-leak-0000abcd",
            1_700_000_000_000u64 + seq
        )
    };
    for seq in 1..=retained {
        let generation = BASELINE + seq as u32;
        leaked.push(string_at(
            0x10_000 + seq * 0x80,
            "/app/leaky.rb",
            5,
            Some(generation),
        ));
        leaked.push(string_at(
            0x10_040 + seq * 0x80,
            "/app/leaky.rb",
            5,
            Some(generation),
        ));
        write_gz(&dir.join(format!("{}.jsonl.gz", stem(seq))), &leaked);
        std::fs::write(
            dir.join(format!("{}.meta.json", stem(seq))),
            meta(seq, "retained", generation),
        )
        .unwrap();
    }
    let seq = retained + 1;
    let mut full = vec![
        format!(
            r#"{{"address":"{STRING_CLASS}", "type":"CLASS", "name":"String", "references":[], "memsize":544}}"#
        ),
        r#"{"type":"ROOT", "root":"vm", "references":["0x7f0000000010"]}"#.to_string(),
    ];
    for site in 0..30u64 {
        for i in 0..50u64 {
            let generation = Some(1 + (i % (BASELINE as u64 - 1)) as u32); // 1..=9
            full.push(string_at(
                0x100_000 + site * 0x1000 + i * 0x40,
                "/app/boot.rb",
                site as u32 + 1,
                generation,
            ));
        }
    }
    for i in 0..40u64 {
        full.push(string_at(0x200_000 + i * 0x40, "", 0, None));
    }
    full.extend(leaked);
    write_gz(&dir.join(format!("{}.jsonl.gz", stem(seq))), &full);
    std::fs::write(
        dir.join(format!("{}.meta.json", stem(seq))),
        meta(seq, "full", BASELINE + seq as u32),
    )
    .unwrap();
}

#[test]
fn a_full_dump_among_retained_ones_counts_only_objects_since_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), 20);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    let ranked: Vec<&str> = r.sites.iter().map(|s| s.site.location.as_str()).collect();
    assert_eq!(ranked, vec!["/app/leaky.rb:5"], "{ranked:?}");
    let top = &r.sites[0];
    assert_eq!(top.series.len(), 21);
    assert_eq!(top.series[19], 40);
    assert_eq!(
        top.series[20], 40,
        "the full dump counts the leak as a retained dump would"
    );
    assert!((top.per_request - 2.0).abs() < 0.2, "{}", top.per_request);
    // The full dump is still the one paths come from.
    assert!(
        top.site.paths.is_some(),
        "held_by from the full dump: {:?}",
        r.warnings
    );
    let last = r.processes[0].dumps.last().unwrap();
    assert_eq!(last.objects, Some(40));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("since the baseline generation 10")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn a_session_of_full_dumps_only_is_counted_whole() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), 3);
    // Rewrite every metadata record as a full dump: nothing to filter by.
    for e in walkdir(dir.path()) {
        if e.ends_with(".meta.json") {
            let text = std::fs::read_to_string(&e)
                .unwrap()
                .replace("\"retained\"", "\"full\"");
            std::fs::write(&e, text).unwrap();
        }
    }
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    let last = r.processes[0].dumps.last().unwrap();
    // 30 sites of 50, 40 untraced, the 6 leaked strings, the String CLASS record.
    assert_eq!(last.objects, Some(30 * 50 + 40 + 6 + 1));
}

fn walkdir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
