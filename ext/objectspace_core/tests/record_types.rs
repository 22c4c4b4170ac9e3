//! Record types outside the interned list (MATCH, RATIONAL, COMPLEX, FILE, ...)
//! keep their own type, whatever records come between them (issue 9).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self, Input};

fn record(addr: u64, ty: &str) -> String {
    format!(
        r#"{{"address":"0x{addr:x}", "type":"{ty}", "shape_id":0, "slot_size":40, "class":"0x10", "file":"/app/a.rb", "line":3, "generation":5, "memsize":40, "flags":{{"wb_protected":true}}}}"#
    )
}

fn write(dir: &Path, name: &str, records: &[(u64, &str)]) -> PathBuf {
    let path = dir.join(name);
    let mut body = String::from(
        r#"{"address":"0x10", "type":"CLASS", "class":"0x8", "name":"Thing", "memsize":500}"#,
    );
    body.push('\n');
    for (addr, ty) in records {
        body.push_str(&record(*addr, ty));
        body.push('\n');
    }
    std::fs::write(&path, body).unwrap();
    path
}

fn by_type(path: &Path) -> BTreeMap<String, u64> {
    let s = analysis::summary(&Input::Local(path.to_path_buf()), &no_progress, 0).unwrap();
    s.groups
        .by_type
        .into_iter()
        .map(|g| (g.name, g.count))
        .collect()
}

#[test]
fn a_rare_type_after_a_common_one_keeps_its_own_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "heap.jsonl",
        &[
            (0x100, "MATCH"),
            (0x200, "STRING"),
            (0x300, "MATCH"),
            (0x400, "RATIONAL"),
            (0x500, "ARRAY"),
            (0x600, "RATIONAL"),
            (0x700, "MATCH"),
            (0x800, "COMPLEX"),
            (0x900, "FILE"),
            (0xa00, "COMPLEX"),
            (0xb00, "HASH"),
            (0xc00, "FILE"),
        ],
    );
    let want: BTreeMap<String, u64> = [
        ("CLASS", 1),
        ("MATCH", 3),
        ("STRING", 1),
        ("RATIONAL", 2),
        ("ARRAY", 1),
        ("COMPLEX", 2),
        ("FILE", 2),
        ("HASH", 1),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    assert_eq!(by_type(&path), want);
}

#[test]
fn diff_reports_no_new_objects_when_only_the_records_between_changed() {
    // Dump 1 has a STRING between two MATCHes; in dumps 2 and 3 the STRING is
    // gone. The MATCH at 0x300 is the same object in all three.
    let dir = tempfile::tempdir().unwrap();
    let one = write(
        dir.path(),
        "1.jsonl",
        &[(0x100, "MATCH"), (0x200, "STRING"), (0x300, "MATCH")],
    );
    let two = write(dir.path(), "2.jsonl", &[(0x100, "MATCH"), (0x300, "MATCH")]);
    let input = |p: &Path| Input::Local(p.to_path_buf());
    let (a, b, c) = (input(&one), input(&two), input(&two));
    let d = analysis::diff([&a, &b, &c], &no_progress, 0).unwrap();
    assert_eq!(d.objects, 0, "{:?}", d.sites);
    assert!(d.sites.is_empty());
}
