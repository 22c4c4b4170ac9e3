//! A freed slot's address is reused by a new object of the same type from the
//! same line (a File opened by the same line on every request, as in the Ruby
//! 3.4 fixture dumps). The allocation generation tells them apart.

use std::path::{Path, PathBuf};

use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self, Input};

fn file_at(addr: u64, fd: u32, generation: Option<u32>) -> String {
    let generation = generation
        .map(|g| format!(r#", "generation":{g}"#))
        .unwrap_or_default();
    format!(
        r#"{{"address":"0x{addr:x}", "type":"FILE", "shape_id":0, "slot_size":20, "class":"0x10", "fd":{fd}, "references":["0x{addr:x}"], "file":"/app/driver.rb", "line":13, "method":"open"{generation}, "memsize":152}}"#
    )
}

fn write(dir: &Path, name: &str, records: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut body = String::from(
        r#"{"address":"0x10", "type":"CLASS", "class":"0x8", "name":"File", "memsize":500}"#,
    );
    body.push('\n');
    for r in records {
        body.push_str(r);
        body.push('\n');
    }
    std::fs::write(&path, body).unwrap();
    path
}

fn diff(dir: &Path, dumps: [&[String]; 3]) -> u64 {
    let [a, b, c] = dumps;
    let (a, b, c) = (
        Input::Local(write(dir, "1.jsonl", a)),
        Input::Local(write(dir, "2.jsonl", b)),
        Input::Local(write(dir, "3.jsonl", c)),
    );
    analysis::diff([&a, &b, &c], &no_progress, 0)
        .unwrap()
        .objects
}

#[test]
fn a_reused_address_with_another_generation_is_another_object() {
    let dir = tempfile::tempdir().unwrap();
    // Request 3's File is freed and request 4's takes its slot.
    let retained = diff(
        dir.path(),
        [
            &[file_at(0x500, 20, Some(2))],
            &[file_at(0x600, 22, Some(3))],
            &[file_at(0x600, 24, Some(4))],
        ],
    );
    assert_eq!(retained, 0);
}

#[test]
fn the_same_object_keeps_its_generation_and_is_retained() {
    let dir = tempfile::tempdir().unwrap();
    let kept = file_at(0x600, 22, Some(3));
    let retained = diff(
        dir.path(),
        [
            &[file_at(0x500, 20, Some(2))],
            std::slice::from_ref(&kept),
            std::slice::from_ref(&kept),
        ],
    );
    assert_eq!(retained, 1);
    // Without generations (a dump without allocation tracing on one side),
    // address, type and file:line still decide.
    let untraced = file_at(0x600, 22, None);
    let retained = diff(
        dir.path(),
        [
            &[file_at(0x500, 20, Some(2))],
            std::slice::from_ref(&kept),
            &[untraced],
        ],
    );
    assert_eq!(retained, 1);
}
