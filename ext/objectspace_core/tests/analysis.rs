//! The analyses on small dumps written by hand, in the exact format of
//! `ObjectSpace.dump_all` (Ruby 3.1, plus 3.2+ SHAPE records and fields).

use std::io::Write;
use std::path::{Path, PathBuf};

use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self, AnalysisError, Input};

const STRING_CLASS: &str = "0x7f0000000010";
const HASH_CLASS: &str = "0x7f0000000020";

fn class_records() -> Vec<String> {
    vec![
        format!(
            r#"{{"address":"{STRING_CLASS}", "type":"CLASS", "class":"0x7f0000000001", "name":"String", "references":["0x7f0000000002"], "memsize":544, "flags":{{"wb_protected":true, "old":true}}}}"#
        ),
        format!(
            r#"{{"address":"{HASH_CLASS}", "type":"CLASS", "class":"0x7f0000000001", "name":"Hash", "references":[], "memsize":544}}"#
        ),
        r#"{"type":"ROOT", "root":"vm", "references":["0x7f0000000010", "0x7f0000000020"]}"#
            .to_string(),
    ]
}

/// A traced STRING record at `file:line`.
fn string_at(addr: u64, file: &str, line: u32, generation: u32, memsize: u64) -> String {
    format!(
        r#"{{"address":"0x{addr:x}", "type":"STRING", "class":"{STRING_CLASS}", "embedded":true, "bytesize":5, "encoding":"UTF-8", "file":"{file}", "line":{line}, "method":"call", "generation":{generation}, "memsize":{memsize}, "flags":{{"wb_protected":true}}}}"#
    )
}

fn hash_at(addr: u64, file: &str, line: u32, generation: u32) -> String {
    format!(
        r#"{{"address":"0x{addr:x}", "type":"HASH", "class":"{HASH_CLASS}", "size":1, "references":["0x7f0000000099"], "file":"{file}", "line":{line}, "method":"call", "generation":{generation}, "memsize":160, "flags":{{"wb_protected":true}}}}"#
    )
}

fn untraced_string(addr: u64, memsize: u64) -> String {
    format!(
        r#"{{"address":"0x{addr:x}", "type":"STRING", "class":"{STRING_CLASS}", "frozen":true, "bytesize":3, "memsize":{memsize}}}"#
    )
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let body = lines.join("\n") + "\n";
    if name.ends_with(".gz") {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
    } else {
        std::fs::write(&path, body).unwrap();
    }
    path
}

fn local(p: &Path) -> Input {
    Input::Local(p.to_path_buf())
}

#[test]
fn summary_groups_by_site_type_class_gem_and_keeps_untraced_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = class_records();
    for i in 0..5 {
        lines.push(string_at(0x1000 + i, "/app/models/user.rb", 7, 10, 40));
    }
    lines.push(hash_at(
        0x2000,
        "/usr/lib/ruby/vendor_ruby/rack/request.rb",
        12,
        11,
    ));
    lines.push(hash_at(
        0x2001,
        "/g/gems/rack-2.2.4/lib/rack/utils.rb",
        3,
        11,
    ));
    lines.push(untraced_string(0x3000, 1000));
    lines.push(untraced_string(0x3001, 24));
    // Ruby 3.2+: SHAPE records and unknown fields are skipped, never fatal.
    lines.push(r#"{"address":"0x4000", "type":"SHAPE", "id":3, "parent_id":1, "depth":2, "shape_type":"IVAR", "edge_name":"@a", "memsize":0}"#.into());
    lines.push(string_at(0x5000, "/app/x.rb", 1, 12, 40).replace(
        "\"embedded\":true",
        "\"shape_id\":7, \"slot_size\":40, \"future\":{\"a\":[1,{\"b\":\"}\"}]}",
    ));
    let path = write(dir.path(), "heap.jsonl", &lines);

    let s = analysis::summary(&local(&path), &no_progress, 0).unwrap();
    assert_eq!(s.objects, 2 + 5 + 2 + 2 + 1);
    assert_eq!(s.roots, 1);
    assert_eq!(s.skipped, 1, "the SHAPE record");
    let user = s
        .sites
        .iter()
        .find(|x| x.location == "/app/models/user.rb:7")
        .unwrap();
    assert_eq!(
        (user.count, user.memsize, user.ty.as_str()),
        (5, 200, "STRING")
    );
    assert_eq!(user.class.as_deref(), Some("String"));
    assert_eq!(user.gem.as_deref(), Some("app"));
    let untraced = s
        .sites
        .iter()
        .find(|x| x.location == "no allocation info" && x.ty == "STRING")
        .unwrap();
    assert_eq!(
        (untraced.count, untraced.memsize, untraced.file.clone()),
        (2, 1024, None)
    );
    // The largest memsize comes first.
    assert_eq!(s.sites[0].memsize, 1088, "{:?}", s.sites[0]);
    let gem = |name: &str| {
        s.groups
            .by_gem
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.count)
    };
    assert_eq!(gem("rack"), Some(2));
    assert_eq!(gem("app"), Some(6));
    let class = |name: &str| {
        s.groups
            .by_class
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.count)
    };
    assert_eq!(class("Hash"), Some(2));
    assert_eq!(class("String"), Some(8));
    assert!(s
        .groups
        .by_location
        .iter()
        .any(|g| g.name == "no allocation info" && g.memsize == 2112));
}

#[test]
fn gzip_reads_like_plain_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = class_records();
    // ~12 MB of JSON: several 4 MiB chunks, so records straddle chunk ends.
    for i in 0..40_000u64 {
        lines.push(string_at(
            0x10_0000 + i,
            &format!("/app/f{}.rb", i % 13),
            (i % 7) as u32,
            3,
            40 + i % 3,
        ));
    }
    let plain = write(dir.path(), "a.jsonl", &lines);
    let gz = write(dir.path(), "a.jsonl.gz", &lines);
    let a = analysis::summary(&local(&plain), &no_progress, 0).unwrap();
    let b = analysis::summary(&local(&gz), &no_progress, 0).unwrap();
    assert_eq!(a.objects, 40_002);
    assert_eq!(
        (a.objects, a.memsize, a.lines),
        (b.objects, b.memsize, b.lines)
    );
    assert_eq!(a.sites, b.sites);
}

#[test]
fn invalid_escapes_and_utf8_are_read_lossily_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = class_records();
    lines.push(string_at(0x10, r"/app/we\ird.rb", 1, 1, 40));
    let mut bad = string_at(0x11, "/app/X.rb", 2, 1, 40).into_bytes();
    let at = bad.windows(1).position(|w| w == b"X").unwrap();
    bad[at] = 0xff;
    let path = dir.path().join("lossy.jsonl");
    let mut body = lines.join("\n").into_bytes();
    body.push(b'\n');
    body.extend_from_slice(&bad);
    body.push(b'\n');
    std::fs::write(&path, body).unwrap();
    let s = analysis::summary(&local(&path), &no_progress, 0).unwrap();
    assert_eq!(s.objects, 4);
    assert_eq!(s.lossy_strings, 2);
    assert!(s.sites.iter().any(|x| x.location == "/app/we\\ird.rb:1"));
    assert!(s.sites.iter().any(|x| x.location == "/app/\u{FFFD}.rb:2"));
}

#[test]
fn diff_matches_on_address_type_and_site() {
    let dir = tempfile::tempdir().unwrap();
    let base = class_records();
    let mut d1 = base.clone();
    let mut d2 = base.clone();
    let mut d3 = base.clone();
    // Present before: not new.
    d1.push(string_at(0x100, "/app/old.rb", 1, 1, 40));
    d2.push(string_at(0x100, "/app/old.rb", 1, 1, 40));
    d3.push(string_at(0x100, "/app/old.rb", 1, 1, 40));
    // New and retained: the leak.
    for i in 0..4 {
        d2.push(string_at(0x200 + i, "/app/leak.rb", 9, 5, 50));
        d3.push(string_at(0x200 + i, "/app/leak.rb", 9, 5, 50));
    }
    // New but freed by dump 3.
    d2.push(string_at(0x300, "/app/temp.rb", 3, 5, 40));
    // Address reused with another type in dump 2: it is a new object.
    d1.push(hash_at(0x400, "/app/h.rb", 1, 1));
    d2.push(string_at(0x400, "/app/reuse.rb", 4, 5, 40));
    d3.push(string_at(0x400, "/app/reuse.rb", 4, 5, 40));
    // Address reused in dump 3 by another site: not retained.
    d2.push(string_at(0x500, "/app/gone.rb", 5, 5, 40));
    d3.push(string_at(0x500, "/app/other.rb", 6, 6, 40));
    // Address reused in dump 2 with the same type but another site: new.
    d1.push(string_at(0x600, "/app/before.rb", 1, 1, 40));
    d2.push(string_at(0x600, "/app/reuse.rb", 4, 5, 40));
    d3.push(string_at(0x600, "/app/reuse.rb", 4, 5, 40));
    let a = write(dir.path(), "1.jsonl", &d1);
    let b = write(dir.path(), "2.jsonl.gz", &d2);
    let c = write(dir.path(), "3.jsonl", &d3);
    let d = analysis::diff([&local(&a), &local(&b), &local(&c)], &no_progress, 0).unwrap();
    let got: Vec<(String, u64, u64)> = d
        .sites
        .iter()
        .map(|s| (s.location.clone(), s.count, s.memsize))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/app/leak.rb:9".to_string(), 4, 200),
            ("/app/reuse.rb:4".to_string(), 2, 80)
        ]
    );
    assert_eq!((d.objects, d.memsize), (6, 280));
    assert_eq!(d.sites[0].class.as_deref(), Some("String"));
}

fn meta(key_stem: &str, pid: u32, seq: u64, path: &str, gc_generation: u64) -> String {
    format!(
        r#"{{"version":1,"key":"{key_stem}.jsonl.gz","host":"web-1","pid":{pid},"seq":{seq},"request":{{"method":"GET","path":"{path}","status":200}},"gc_generation":{gc_generation},"baseline_generation":10,"dump":"retained","mode":"fork","redacted":true,"types":{{"STRING":{{"count":1,"memsize":40}}}},"unknown_future_field":[1,2]}}"#
    )
}

/// A session of retained dumps: /leak appends 2 strings a request (kept
/// forever); /cache fills a 6-entry cache then stays flat.
fn session(dir: &Path, requests: u64) -> Vec<PathBuf> {
    let mut leak: Vec<(u64, u32)> = Vec::new();
    let mut cache: Vec<(u64, u32)> = Vec::new();
    let mut paths = Vec::new();
    for seq in 1..=requests {
        let generation = 10 + 3 * seq as u32;
        let path = if seq % 2 == 0 { "/cache" } else { "/leak" };
        if path == "/leak" {
            leak.push((0x10_000 + seq * 2, generation + 1));
            leak.push((0x10_001 + seq * 2, generation + 1));
        } else if cache.len() < 6 {
            cache.push((0x20_000 + seq, generation + 1));
        }
        let mut lines = class_records();
        lines.extend(
            leak.iter()
                .map(|&(a, g)| string_at(a, "/srv/app/leaky.rb", 12, g, 64)),
        );
        lines.extend(
            cache
                .iter()
                .map(|&(a, g)| hash_at(a, "/srv/app/cache.rb", 30, g)),
        );
        let slug = path.trim_start_matches('/');
        let stem = format!(
            "web-1/4242/{seq:06}-{}-GET-{slug}-0000abcd",
            1_700_000_000_000u64 + seq
        );
        paths.push(write(dir, &format!("{stem}.jsonl.gz"), &lines));
        std::fs::write(
            dir.join(format!("{stem}.meta.json")),
            meta(&stem, 4242, seq, path, generation as u64),
        )
        .unwrap();
    }
    paths
}

#[test]
fn leaks_ranks_the_growing_site_and_not_the_bounded_cache() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), 30);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    assert_eq!(
        r.sites.len(),
        1,
        "{:#?}",
        r.sites.iter().map(|s| &s.site.location).collect::<Vec<_>>()
    );
    let top = &r.sites[0];
    assert_eq!(top.site.location, "/srv/app/leaky.rb:12");
    assert_eq!(top.site.count, 30);
    assert!((top.per_request - 1.0).abs() < 0.1, "{}", top.per_request);
    assert_eq!(top.series.len(), 30);
    assert_eq!(top.endpoints.len(), 1);
    assert_eq!(
        (
            top.endpoints[0].method.as_str(),
            top.endpoints[0].path.as_str(),
            top.endpoints[0].count
        ),
        ("GET", "/leak", 30)
    );
    assert_eq!(r.processes.len(), 1);
    assert_eq!(
        (r.processes[0].host.as_str(), r.processes[0].pid),
        ("web-1", 4242)
    );
    assert_eq!(r.processes[0].dumps.len(), 30);
    assert!(r.processes[0].dumps.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // Also through a file:// store URL.
    let url = format!("file://{}", dir.path().display());
    let r2 = analysis::leaks(&url, &no_progress, 0, 1).unwrap();
    assert_eq!(r2.sites[0].site.location, "/srv/app/leaky.rb:12");
}

#[test]
fn leaks_skips_a_broken_dump_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let paths = session(dir.path(), 20);
    let victim = &paths[7];
    let bytes = std::fs::read(victim).unwrap();
    std::fs::write(victim, &bytes[..bytes.len() / 2]).unwrap();
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    assert_eq!(r.sites[0].site.location, "/srv/app/leaky.rb:12");
    assert_eq!(r.processes[0].dumps.len(), 19);
    assert_eq!(r.processes[0].skipped.len(), 1);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("000008-") && r.warnings[0].contains("gzip stream truncated"),
        "{}",
        r.warnings[0]
    );
}

#[test]
fn ls_lists_dumps_with_their_requests() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), 4);
    let l = analysis::ls(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(l.dumps.len(), 4);
    let d = &l.dumps[1];
    assert_eq!(
        (d.seq, d.method.as_deref(), d.path.as_deref(), d.status),
        (Some(2), Some("GET"), Some("/cache"), Some(200))
    );
    assert_eq!(d.dump.as_deref(), Some("retained"));
    assert_eq!(d.objects, Some(1));
}

fn expect_parse_error(path: &Path) -> String {
    match analysis::summary(&local(path), &no_progress, 0) {
        Err(e @ (AnalysisError::Parse { .. } | AnalysisError::Truncated { .. })) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn unreadable_dumps_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = class_records();
    for i in 0..100 {
        lines.push(string_at(0x100 + i, "/app/a.rb", 1, 1, 40));
    }
    let body = lines.join("\n") + "\n";

    // A record cut in half (a process killed mid-dump).
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, &body[..body.len() - 60]).unwrap();
    let m = expect_parse_error(&cut);
    assert!(
        m.starts_with(&format!("{}: line 103: record cut short", cut.display())),
        "{m}"
    );

    // Malformed JSON in the middle.
    let mut bad = lines.clone();
    bad[50] = bad[50].replace("\"type\":\"STRING\"", "\"type\" \"STRING\"");
    let p = write(dir.path(), "bad.jsonl", &bad);
    let m = expect_parse_error(&p);
    assert!(m.contains("bad.jsonl: line 51: malformed JSON"), "{m}");

    // Binary junk.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, [0u8, 159, 146, 150, 255, 10, 1, 2, 3]).unwrap();
    let m = expect_parse_error(&junk);
    assert!(m.contains("junk.bin: line 1:"), "{m}");

    // A truncated gzip stream.
    let gz = write(dir.path(), "t.jsonl.gz", &lines);
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let m = expect_parse_error(&gz);
    assert!(
        m.contains("t.jsonl.gz: gzip stream truncated after line"),
        "{m}"
    );

    // Gzip magic followed by garbage.
    let fake = dir.path().join("fake.gz");
    std::fs::write(&fake, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    let m = expect_parse_error(&fake);
    assert!(m.contains("fake.gz"), "{m}");

    // Missing file and folder given to summary.
    let missing =
        analysis::summary(&local(&dir.path().join("nope.jsonl")), &no_progress, 0).unwrap_err();
    assert!(
        missing.to_string().ends_with("nope.jsonl: no such file"),
        "{missing}"
    );
}

mod properties {
    use objectspace_core::scan::{scan, unescape_lossy};
    use proptest::prelude::*;

    fn record(
        addr: u64,
        ty: &str,
        file: &str,
        line: u32,
        gen: u32,
        memsize: u64,
        value: &str,
    ) -> String {
        format!(
            r#"{{"address":"0x{addr:x}", "type":"{ty}", "class":"0x7f10", "bytesize":3, "value":{}, "file":{}, "line":{line}, "method":"m", "generation":{gen}, "memsize":{memsize}, "flags":{{"wb_protected":true}}}}"#,
            serde_json::to_string(value).unwrap(),
            serde_json::to_string(file).unwrap(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Arbitrary bytes never panic the scanner.
        #[test]
        fn scan_never_panics_on_junk(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = scan(&bytes);
        }

        /// Valid records round-trip every field the analyses use.
        #[test]
        fn valid_records_round_trip(addr in 1u64.., ty in "[A-Z]{1,10}", file in "\\PC{0,40}", line in 0u32..1_000_000,
                                    gen in 0u32..1_000_000, memsize in 0u64..u64::MAX / 2, value in "\\PC{0,60}") {
            let line_s = record(addr, &ty, &file, line, gen, memsize, &value);
            let r = scan(line_s.as_bytes()).unwrap();
            prop_assert_eq!(r.address, Some(addr));
            prop_assert_eq!(r.ty, ty.as_bytes());
            prop_assert_eq!(r.line, Some(line));
            prop_assert_eq!(r.generation, Some(gen));
            prop_assert_eq!(r.memsize, memsize);
            let (text, lossy) = unescape_lossy(r.file.unwrap(), r.file_escaped);
            prop_assert_eq!(text, file);
            prop_assert!(!lossy);
        }

        /// Any prefix of a record (a dump cut anywhere) and any single-byte
        /// corruption is an error or a record, never a panic.
        #[test]
        fn cut_or_corrupted_records_never_panic(cut in 0usize..300, at in 0usize..300, byte in any::<u8>()) {
            let line = record(0x7f00ab, "STRING", "/app/a.rb", 3, 4, 40, "x\"}]{[");
            let b = line.as_bytes();
            let cut = cut.min(b.len());
            if cut < b.len() {
                prop_assert!(scan(&b[..cut]).is_err());
            }
            let mut c = b.to_vec();
            let at = at.min(c.len() - 1);
            c[at] = byte;
            let _ = scan(&c);
        }
    }
}

#[test]
fn leaks_and_summary_read_from_a_store_url() {
    use objectspace_core::runtime::block_on;
    use objectspace_core::store::Store;

    // Write a session to a temp dir, then copy it into an in-process store.
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), 12);
    let url = "memory://analysis-store-test";
    let store = Store::open(url).unwrap();
    let mut keys = Vec::new();
    for entry in walkdir(dir.path()) {
        let key = entry
            .strip_prefix(dir.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let bytes = std::fs::read(&entry).unwrap();
        block_on(store.put(&key, bytes.into())).unwrap().unwrap();
        keys.push(key);
    }
    let r = analysis::leaks(url, &no_progress, 0, 2).unwrap();
    assert_eq!(r.sites[0].site.location, "/srv/app/leaky.rb:12");
    assert_eq!(r.processes[0].dumps.len(), 12);
    assert_eq!(r.sites[0].endpoints[0].path, "/leak");

    let l = analysis::ls(url).unwrap();
    assert_eq!(l.dumps.len(), 12);

    // One object by URL: summary fetches and gunzips it from the store.
    let key = keys
        .iter()
        .filter(|k| k.ends_with(".jsonl.gz"))
        .max()
        .unwrap();
    let input = analysis::input_for(&format!("{url}/{key}")).unwrap();
    let s = analysis::summary(&input, &no_progress, 0).unwrap();
    assert!(s
        .sites
        .iter()
        .any(|x| x.location == "/srv/app/leaky.rb:12" && x.count == 12));

    // A broken object in the store is skipped by leaks, with a warning.
    block_on(store.put(key, bytes::Bytes::from_static(b"\x1f\x8b\x08\x00junk")))
        .unwrap()
        .unwrap();
    let r = analysis::leaks(url, &no_progress, 0, 2).unwrap();
    assert_eq!(r.processes[0].skipped.len(), 1);
    assert!(r.warnings[0].contains(key.as_str()), "{:?}", r.warnings);
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn a_progress_callback_that_says_stop_interrupts_every_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let paths = session(dir.path(), 6);
    let stop = |_: u64| false;
    let one = local(&paths[0]);
    assert!(matches!(
        analysis::summary(&one, &stop, 0),
        Err(AnalysisError::Interrupted)
    ));
    assert!(matches!(
        analysis::diff([&one, &local(&paths[1]), &local(&paths[2])], &stop, 0),
        Err(AnalysisError::Interrupted)
    ));
    // leaks skips a dump it cannot read, but stops on an interruption.
    assert!(matches!(
        analysis::leaks(dir.path().to_str().unwrap(), &stop, 0, 2),
        Err(AnalysisError::Interrupted)
    ));
}
