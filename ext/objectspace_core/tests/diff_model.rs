//! `diff` against a plain model of its rule, on random dumps with reused and
//! shared addresses, records in any order, file names written two ways, and
//! records that are not objects: the 2nd dump's objects whose address holds
//! no same object in the 1st (its first object there, in dump order) and
//! holds the same object in the 3rd, by site. Two records are the same object
//! when the type matches, the generation too when both have one, and
//! file:line too when both have a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use objectspace_core::analysis::heap::{Heap, Obj, NO_GENERATION};
use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self, Input};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Two spellings of one name among them: the reader compares names as text.
const FILES: [&str; 4] = [
    "/app/a.rb",
    "/app/caf\\u00e9.rb",
    "/app/café.rb",
    "/gems/x-1.0/lib/x.rb",
];
const TYPES: [&str; 4] = ["STRING", "ARRAY", "MATCH", "NODE_X"];

#[derive(Debug, Clone)]
struct Rec {
    slot: u64,
    ty: usize,
    file: Option<(usize, u32)>,
    generation: Option<u32>,
    memsize: u32,
    class: u64,
}

/// A record at one of `slots` addresses.
fn rec(slots: u64) -> impl Strategy<Value = Rec> {
    (
        0..slots,
        0..TYPES.len(),
        proptest::option::of((0..FILES.len(), 1..3u32)),
        proptest::option::of(1..3u32),
        0..100u32,
        0..2u64,
    )
        .prop_map(|(slot, ty, file, generation, memsize, class)| Rec {
            slot,
            ty,
            file,
            generation,
            memsize,
            class,
        })
}

fn render(recs: &[Rec], pad: usize) -> String {
    let mut out = String::from(
        r#"{"address":"0x100", "type":"CLASS", "name":"Thing", "memsize":500}
{"address":"0x108", "type":"CLASS", "name":"Other", "memsize":500}
{"type":"ROOT", "root":"vm", "references":["0x100"]}
{"address":"0x110", "type":"SHAPE", "memsize":0}
{"address":"0x118", "type":"MODULE", "name":"Old", "before_baseline":true, "memsize":0}
"#,
    );
    for r in recs {
        let addr = 0x7f00_0000_0000u64 + 40 * r.slot;
        out += &format!(
            r#"{{"address":"{addr:#x}", "type":"{}", "class":"{:#x}""#,
            TYPES[r.ty],
            0x100 + 8 * r.class
        );
        if pad > 0 {
            out += &format!(r#", "value":"{}""#, "v".repeat(pad));
        }
        if let Some((f, line)) = r.file {
            out += &format!(r#", "file":"{}", "line":{line}"#, FILES[f]);
        }
        if let Some(g) = r.generation {
            out += &format!(r#", "generation":{g}"#);
        }
        out += &format!(r#", "memsize":{}}}"#, r.memsize);
        out.push('\n');
    }
    out
}

fn same(h: &Heap, o: &Obj, other: &Heap, p: &Obj) -> bool {
    h.types.get(o.ty as u32) == other.types.get(p.ty as u32)
        && (o.generation == NO_GENERATION
            || p.generation == NO_GENERATION
            || o.generation == p.generation)
        && (o.file == 0
            || p.file == 0
            || (o.line == p.line && h.files.get(o.file) == other.files.get(p.file)))
}

type Rows = BTreeMap<(String, String, Option<String>), (u64, u64)>;

/// The model: (objects, memsize, rows by location, type and class).
fn model(paths: [&Path; 3]) -> (u64, u64, Rows) {
    let [a, b, c] =
        paths.map(|p| Heap::read(&Input::Local(p.to_path_buf()), &no_progress).unwrap());
    // The first object at each address, in dump order.
    let firsts = |h: &Heap| {
        let mut m = std::collections::HashMap::new();
        for p in &h.objects {
            m.entry(p.addr).or_insert(*p);
        }
        m
    };
    let (in_a, in_c) = (firsts(&a), firsts(&c));
    let (mut objects, mut memsize, mut rows) = (0, 0, Rows::new());
    for o in &b.objects {
        if in_a.get(&o.addr).is_some_and(|p| same(&b, o, &a, p)) {
            continue;
        }
        if !in_c.get(&o.addr).is_some_and(|p| same(&b, o, &c, p)) {
            continue;
        }
        objects += 1;
        memsize += o.memsize as u64;
        let file = b.files.get(o.file);
        let location = if o.file == 0 {
            "no allocation info".to_string()
        } else {
            format!("{file}:{}", o.line)
        };
        let row = rows
            .entry((
                location,
                b.types.get(o.ty as u32).to_string(),
                b.class_name(o.class).map(str::to_string),
            ))
            .or_default();
        row.0 += 1;
        row.1 += o.memsize as u64;
    }
    (objects, memsize, rows)
}

fn check(dir: &Path, dumps: [&[Rec]; 3], pad: usize) -> Result<(), TestCaseError> {
    let paths: Vec<PathBuf> = dumps
        .iter()
        .enumerate()
        .map(|(i, recs)| {
            let p = dir.join(format!("{i}.json"));
            std::fs::write(&p, render(recs, pad)).unwrap();
            p
        })
        .collect();
    let inputs: Vec<Input> = paths.iter().map(|p| Input::Local(p.clone())).collect();
    let d = analysis::diff([&inputs[0], &inputs[1], &inputs[2]], &no_progress, 0).unwrap();
    let (objects, memsize, want) = model([&paths[0], &paths[1], &paths[2]]);
    let mut got = Rows::new();
    for s in &d.sites {
        let row = got
            .entry((s.location.clone(), s.ty.clone(), s.class.clone()))
            .or_default();
        row.0 += s.count;
        row.1 += s.memsize;
    }
    prop_assert_eq!((d.objects, d.memsize), (objects, memsize));
    prop_assert_eq!(got, want);
    let counts: Vec<u64> = paths
        .iter()
        .map(|p| {
            Heap::read(&Input::Local(p.clone()), &no_progress)
                .unwrap()
                .objects
                .len() as u64
        })
        .collect();
    prop_assert_eq!(&d.input_objects, &counts);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn diff_is_the_model(
        a in prop::collection::vec(rec(24), 0..30),
        b in prop::collection::vec(rec(24), 0..30),
        c in prop::collection::vec(rec(24), 0..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), [&a, &b, &c], 0)?;
    }
}

/// Dumps big enough to be read in parts on several threads (a part is at
/// least 8 MB): the same as the model, whatever part an address falls in.
#[test]
fn diff_of_dumps_read_in_parts_is_the_model() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let dumps: Vec<Vec<Rec>> = (0..3)
        .map(|_| {
            prop::collection::vec(rec(40_000), 30_000)
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // ~600 bytes a record: ~18 MB a dump.
    check(dir.path(), [&dumps[0], &dumps[1], &dumps[2]], 500).unwrap();
}
