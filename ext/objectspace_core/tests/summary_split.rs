//! A plain dump read on several threads (cut at line starts, parts joined in
//! file order) gives exactly what one thread gives: the same objects with the
//! same file, type and class names, the same summary, and the same error with
//! the same line number for a bad line or a last record cut short.

use std::path::Path;

use objectspace_core::analysis::heap::Heap;
use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::summary::summarize;
use objectspace_core::analysis::Input;
use proptest::prelude::*;

const FILES: [&str; 6] = [
    "/app/a.rb",
    "/app/b.rb",
    "/app/caf\\u00e9.rb",
    "/gems/x-1.0/lib/x.rb",
    "<internal:kernel>",
    "/app/\\\"quoted\\\".rb",
];
const TYPES: [&str; 6] = ["STRING", "ARRAY", "HASH", "OBJECT", "MATCH", "NODE_X"];

#[derive(Debug, Clone)]
enum Line {
    Object {
        ty: usize,
        file: Option<(usize, u32)>,
        memsize: u32,
        value: usize,
    },
    Class(u64, String),
    Root,
    Blank,
}

fn line_strategy() -> impl Strategy<Value = Line> {
    prop_oneof![
        8 => (0..TYPES.len(), proptest::option::of((0..FILES.len(), 1..40u32)), 0..5000u32, 0..600usize)
            .prop_map(|(ty, file, memsize, value)| Line::Object { ty, file, memsize, value }),
        1 => (0..4u64, "[A-Z][a-z]{0,6}").prop_map(|(i, n)| Line::Class(i, n)),
        1 => Just(Line::Root),
        1 => Just(Line::Blank),
    ]
}

fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let addr = 0x7f00_0000_0000u64 + 0x28 * i as u64;
        match l {
            Line::Object {
                ty,
                file,
                memsize,
                value,
            } => {
                out += &format!(
                    r#"{{"address":"0x{addr:x}", "type":"{}", "class":"0x7f00000000{:02x}""#,
                    TYPES[*ty],
                    (i % 4) * 8
                );
                if *value > 0 {
                    // Long values: records that span the cut points.
                    out += &format!(r#", "value":"{}""#, "v".repeat(*value));
                }
                if let Some((f, line)) = file {
                    out += &format!(
                        r#", "file":"{}", "line":{line}, "generation":{}"#,
                        FILES[*f],
                        i % 9
                    );
                }
                out += &format!(r#", "memsize":{memsize}}}"#);
            }
            Line::Class(k, name) => {
                out += &format!(
                    r#"{{"address":"0x7f00000000{:02x}", "type":"CLASS", "name":"{name}", "memsize":544}}"#,
                    k * 8
                );
            }
            Line::Root => out += r#"{"type":"ROOT", "root":"vm", "references":["0x7f0000000000"]}"#,
            Line::Blank => {}
        }
        out.push('\n');
    }
    out
}

/// Every object as names (ids differ between readings only if they must not).
fn objects(h: &Heap) -> Vec<(u64, String, u32, String, u64, u32, u32)> {
    h.objects
        .iter()
        .map(|o| {
            (
                o.addr,
                h.files.get(o.file).to_string(),
                o.line,
                h.types.get(o.ty as u32).to_string(),
                o.class,
                o.memsize,
                o.generation,
            )
        })
        .collect()
}

fn both(path: &Path, cuts: &[u64]) -> (Result<Heap, String>, Result<Heap, String>) {
    let input = Input::Local(path.to_path_buf());
    let one = Heap::read(&input, &no_progress).map_err(|e| e.to_string());
    let split = Heap::read_split_at(&input, &no_progress, cuts).map_err(|e| e.to_string());
    (one, split)
}

fn assert_same(one: Result<Heap, String>, split: Result<Heap, String>) {
    match (one, split) {
        (Ok(a), Ok(b)) => {
            assert_eq!(objects(&a), objects(&b));
            assert_eq!(a.class_names, b.class_names);
            assert_eq!(
                (a.roots, a.skipped, a.lossy()),
                (b.roots, b.skipped, b.lossy())
            );
            assert_eq!(
                (a.stats.lines, a.stats.bytes),
                (b.stats.lines, b.stats.bytes)
            );
            let sa = serde_json::to_value(summarize(&a, 0)).unwrap();
            let sb = serde_json::to_value(summarize(&b, 0)).unwrap();
            assert_eq!(sa, sb);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!(
            "one thread: {:?}; split: {:?}",
            a.map(|h| h.objects.len()),
            b.map(|h| h.objects.len())
        ),
    }
}

fn cuts_in(len: usize, fractions: &[f64]) -> Vec<u64> {
    let mut cuts: Vec<u64> = fractions.iter().map(|f| (f * len as f64) as u64).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn split_reads_equal_one_thread(
        lines in proptest::collection::vec(line_strategy(), 0..120),
        fractions in proptest::collection::vec(0.0f64..1.0, 1..6),
        no_final_newline in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        let mut text = render(&lines);
        if no_final_newline {
            text.pop();
        }
        std::fs::write(&path, &text).unwrap();
        let (one, split) = both(&path, &cuts_in(text.len(), &fractions));
        prop_assert!(one.is_ok());
        assert_same(one, split);
    }

    #[test]
    fn a_last_record_cut_short_gives_the_same_numbered_error(
        lines in proptest::collection::vec(line_strategy(), 2..80),
        keep in 0.05f64..0.95,
        fractions in proptest::collection::vec(0.0f64..1.0, 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        let mut text = render(&lines);
        text += r#"{"address":"0x7f0000ffff00", "type":"STRING", "class":"0x7f0000000000", "file":"/app/a.rb", "line":3, "memsize":40}"#;
        let last_start = text.rfind('\n').map_or(0, |k| k + 1);
        let cut = last_start + ((text.len() - last_start) as f64 * keep) as usize;
        text.truncate(cut.max(last_start + 1));
        std::fs::write(&path, &text).unwrap();
        let (one, split) = both(&path, &cuts_in(text.len(), &fractions));
        let message = one.as_ref().err().cloned().unwrap_or_default();
        prop_assert!(message.contains(&format!("line {}:", lines.len() + 1)), "{}", message);
        prop_assert!(message.contains("cut short"), "{}", message);
        assert_same(one, split);
    }

    #[test]
    fn a_bad_line_anywhere_gives_the_same_numbered_error(
        lines in proptest::collection::vec(line_strategy(), 1..80),
        bad in any::<proptest::sample::Index>(),
        fractions in proptest::collection::vec(0.0f64..1.0, 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        let mut rows: Vec<String> = render(&lines).lines().map(str::to_string).collect();
        let at = bad.index(rows.len());
        rows[at] = r#"{"address":"0x7f0000000001", "type":"STRING", "memsize":}"#.to_string();
        let text = rows.join("\n") + "\n";
        std::fs::write(&path, &text).unwrap();
        let (one, split) = both(&path, &cuts_in(text.len(), &fractions));
        let message = one.as_ref().err().cloned().unwrap_or_default();
        prop_assert!(message.contains(&format!("line {}:", at + 1)), "{}", message);
        assert_same(one, split);
    }
}

#[test]
fn read_parallel_splits_a_big_plain_file_and_not_a_gzipped_one() {
    // 20 MB: above the 2 x 8 MB a split needs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    let lines: Vec<Line> = (0..60_000)
        .map(|i| Line::Object {
            ty: i % TYPES.len(),
            file: Some((i % FILES.len(), (i % 37) as u32)),
            memsize: 40,
            value: 250,
        })
        .collect();
    let text = render(&lines);
    assert!(text.len() > 16 << 20);
    std::fs::write(&path, &text).unwrap();
    let input = Input::Local(path.clone());
    let one = Heap::read(&input, &no_progress).map_err(|e| e.to_string());
    let parts = std::sync::atomic::AtomicU64::new(0);
    let counting = |n: u64| {
        parts.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        true
    };
    let split = Heap::read_parallel(&input, &counting, 3).map_err(|e| e.to_string());
    assert_eq!(
        parts.into_inner(),
        text.len() as u64,
        "progress counts every byte once"
    );
    assert_same(one, split);
    // Gzip: read whole, the same result.
    let gz = dir.path().join("big.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let g = Heap::read_parallel(&Input::Local(gz), &no_progress, 3).unwrap();
    assert_eq!(g.objects.len(), 60_000);
}
