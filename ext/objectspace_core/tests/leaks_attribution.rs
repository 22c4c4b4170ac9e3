//! `leaks` reports that do not mislead: objects attributed to the request
//! that allocated them (the records' `"request":N`), objects per request (not
//! per dump), this gem's own files left out, and dumps missing from a session.

use std::io::Write;
use std::path::Path;

use objectspace_core::analysis::dump_leaks::{AMBIGUOUS, NOT_DUMPED};
use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self};

const STRING_CLASS: &str = "0x7f0000000010";
const OWN_FILE: &str = "/gems/rack-objectspace-0.1.0/lib/rack/objectspace/dumper.rb";

fn string_at(addr: u64, file: &str, line: u32, generation: u32, request: Option<u64>) -> String {
    let request = request.map_or(String::new(), |r| format!(", \"request\":{r}"));
    format!(
        r#"{{"address":"0x{addr:x}", "type":"STRING", "class":"{STRING_CLASS}", "bytesize":5, "file":"{file}", "line":{line}, "generation":{generation}{request}, "memsize":40}}"#
    )
}

fn write_gz(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn endpoint(requests: u64) -> &'static str {
    if requests % 2 == 1 {
        "/profile"
    } else {
        "/product"
    }
}

/// A fork-mode session as the issue saw it: the parent's GC count never moves
/// (every record has generation 20 and every dump gc_generation 20), one dump
/// every `every` requests. Each /profile request leaks one string; /product
/// allocates nothing that lives. The middleware's own file grows too.
/// `with_request`: records carry the tracer's `"request":N`.
/// `lost`: sequence numbers whose dump never reached the store.
fn fork_session(dir: &Path, served: u64, every: u64, with_request: bool, lost: &[u64]) {
    let mut leaked: Vec<(u64, u64)> = Vec::new();
    let mut own: Vec<u64> = Vec::new();
    let mut seq = 0;
    for r in 1..=served {
        if endpoint(r) == "/profile" {
            leaked.push((0x10_000 + r * 0x40, r));
        }
        if (r - 1) % every != 0 {
            continue;
        }
        seq += 1;
        own.push(0x90_000 + seq * 0x40);
        if lost.contains(&seq) {
            continue;
        }
        let mut lines: Vec<String> = leaked
            .iter()
            .map(|&(a, req)| {
                string_at(a, "/srv/app/profile.rb", 7, 20, with_request.then_some(req))
            })
            .collect();
        lines.extend(own.iter().map(|&a| string_at(a, OWN_FILE, 136, 20, None)));
        let path = endpoint(r);
        let stem = format!(
            "web-1/77/{seq:06}-{}-GET-{}-00000001",
            1_700_000_000_000u64 + r,
            path.trim_start_matches('/')
        );
        write_gz(&dir.join(format!("{stem}.jsonl.gz")), &lines);
        let meta = format!(
            r#"{{"version":1,"host":"web-1","pid":77,"seq":{seq},"request":{{"method":"GET","path":"{path}","status":200}},"gc_generation":20,"requests":{r},"dump":"full","mode":"fork"}}"#
        );
        std::fs::write(dir.join(format!("{stem}.meta.json")), meta).unwrap();
    }
}

#[test]
fn the_request_field_names_the_leaking_endpoint_alone_when_gc_generations_do_not_move() {
    let dir = tempfile::tempdir().unwrap();
    // Every request dumped: each leaked object's request has a dump, hence an endpoint.
    fork_session(dir.path(), 40, 1, true, &[]);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    let top = &r.sites[0];
    assert_eq!(top.site.location, "/srv/app/profile.rb:7");
    let named: Vec<(&str, &str, u64)> = top
        .endpoints
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.count))
        .collect();
    assert_eq!(named, vec![("GET", "/profile", 20)]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["sites"][0]["allocated_by"][0]["path"], "/profile");
    assert!(json["sites"][0].get("endpoints").is_none());
}

#[test]
fn objects_from_requests_that_were_not_dumped_are_grouped_as_such() {
    let dir = tempfile::tempdir().unwrap();
    // Dumps of requests 1, 4, 7, ...: /profile on 1, 7, 13, ...; /product on 4, 10, ...
    fork_session(dir.path(), 60, 3, true, &[]);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    let top = &r.sites[0];
    assert_eq!(top.site.location, "/srv/app/profile.rb:7");
    let mut named: Vec<(&str, u64)> = top
        .endpoints
        .iter()
        .map(|e| (e.path.as_str(), e.count))
        .collect();
    named.sort();
    // 29 leaked by /profile requests 1..=57 (the last dump is of request 58);
    // 10 of them (1, 7, ..., 55) were dumped themselves.
    assert_eq!(named, vec![(NOT_DUMPED, 19), ("/profile", 10)]);
    assert!(top.endpoints.iter().all(|e| e.path != "/product"));
}

#[test]
fn objects_per_request_divides_by_requests_served_not_by_dumps() {
    let dir = tempfile::tempdir().unwrap();
    // One dump every 10 requests; one leaked string every other request.
    fork_session(dir.path(), 200, 10, true, &[]);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    let top = &r.sites[0];
    assert_eq!(top.site.location, "/srv/app/profile.rb:7");
    assert!((top.per_request - 0.5).abs() < 0.01, "{}", top.per_request);
}

#[test]
fn without_the_request_field_endpoints_fall_back_to_gc_generations() {
    let dir = tempfile::tempdir().unwrap();
    fork_session(dir.path(), 20, 1, false, &[]);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    // Every object has generation 20, and so do the 20 dumps, of two endpoints:
    // which one allocated them cannot be told, and the report says so instead
    // of naming one (the fallback's limit in fork mode, without `request`).
    let top = &r.sites[0];
    let named: Vec<(&str, u64)> = top
        .endpoints
        .iter()
        .map(|e| (e.path.as_str(), e.count))
        .collect();
    assert_eq!(named, vec![(AMBIGUOUS, 10)]);
}

#[test]
fn this_gems_own_files_are_never_reported() {
    let dir = tempfile::tempdir().unwrap();
    fork_session(dir.path(), 30, 1, true, &[]);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    let locations: Vec<&str> = r.sites.iter().map(|s| s.site.location.as_str()).collect();
    assert_eq!(locations, vec!["/srv/app/profile.rb:7"]);

    // summary: no site row for them, but counted under their gem's name.
    let session = analysis::session::Session::open(dir.path().to_str().unwrap()).unwrap();
    let last = session
        .entries
        .iter()
        .max_by_key(|e| e.key.clone())
        .unwrap();
    let s = analysis::summary(&last.input, &no_progress, 0).unwrap();
    assert!(s
        .sites
        .iter()
        .all(|site| site.gem.as_deref() != Some("rack-objectspace")));
    let gems: Vec<(&str, u64)> = s
        .groups
        .by_gem
        .iter()
        .map(|g| (g.name.as_str(), g.count))
        .collect();
    assert!(gems.contains(&("rack-objectspace", 30)), "{gems:?}");
}

#[test]
fn leaks_and_ls_count_the_dumps_a_session_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    fork_session(dir.path(), 30, 1, true, &[3, 4, 5, 17]);
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 2).unwrap();
    assert_eq!(r.processes[0].missing_dumps, 4);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("web-1/77: 4 dump(s) missing")),
        "{:?}",
        r.warnings
    );
    let l = analysis::ls(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(l.processes.len(), 1);
    assert_eq!(
        (l.processes[0].dumps, l.processes[0].missing_dumps),
        (26, 4)
    );
    assert_eq!(l.dumps[2].requests, Some(6));

    let full = tempfile::tempdir().unwrap();
    fork_session(full.path(), 10, 1, true, &[]);
    assert_eq!(
        analysis::ls(full.path().to_str().unwrap())
            .unwrap()
            .processes[0]
            .missing_dumps,
        0
    );
    // The first dumps lost count too: seq starts at 1.
    let head = tempfile::tempdir().unwrap();
    fork_session(head.path(), 10, 1, true, &[1, 2]);
    assert_eq!(
        analysis::ls(head.path().to_str().unwrap())
            .unwrap()
            .processes[0]
            .missing_dumps,
        2
    );
}
