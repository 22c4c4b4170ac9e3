//! Retention paths: random object graphs written as dump records with
//! `references`, read back, and every reported path checked against a plain
//! BFS on the same graph; and the paths of `diff` and `leaks` on small dumps.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use objectspace_core::analysis::heap::Heap;
use objectspace_core::analysis::paths::{Graph, Step, KEEP_STEPS, MAX_PATHS};
use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::{self, Input};
use proptest::prelude::*;

const BASE: u64 = 0x7f00_0000_0000;

/// A random heap: objects with references, ROOT records, some references to
/// objects missing from the dump.
#[derive(Debug, Clone)]
struct World {
    /// Address of each object (distinct; not always in order, not evenly spaced).
    addrs: Vec<u64>,
    /// 0 STRING, 1 ARRAY, 2 HASH, 3 OBJECT, 4 MODULE (named)
    kinds: Vec<u8>,
    /// Allocation site of each object: 0 = none, else line at /app/s.rb.
    sites: Vec<u32>,
    /// References, by object number; `None` = an address not in the dump.
    refs: Vec<Vec<Option<usize>>>,
    /// ROOT categories and what they hold.
    roots: Vec<(String, Vec<Option<usize>>)>,
    /// The order records are written in.
    shuffle: Vec<usize>,
}

const KINDS: [&str; 5] = ["STRING", "ARRAY", "HASH", "OBJECT", "MODULE"];
const ROOTS: [&str; 4] = ["vm", "machine_context", "global_list", "finalizer"];

fn world() -> impl Strategy<Value = World> {
    (1usize..70).prop_flat_map(|n| {
        let target = prop_oneof![9 => (0..n).prop_map(Some), 1 => Just(None)];
        (
            // Gaps between addresses: 40-byte slots, sometimes a far jump (another page).
            prop::collection::vec(prop_oneof![4 => Just(40u64), 1 => 1u64..5000], n),
            prop::collection::vec(0u8..5, n),
            prop::collection::vec(prop_oneof![Just(0u32), 1u32..4], n),
            prop::collection::vec(prop::collection::vec(target.clone(), 0..4), n),
            prop::collection::vec(prop::collection::vec(target, 0..4), 0..4),
            0u8..3,
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(|(gaps, kinds, sites, refs, roots, mode, order)| {
                let mut addrs = Vec::with_capacity(gaps.len());
                let mut a = BASE;
                for g in gaps {
                    a += g * 8;
                    addrs.push(a);
                }
                let roots = roots
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (ROOTS[i].to_string(), t))
                    .collect();
                let n = addrs.len();
                let shuffle = match mode {
                    // Address order.
                    0 => (0..n).collect(),
                    // As dump_all writes: 16 KiB pages in any order (here
                    // last first), each in address order.
                    1 => {
                        let mut o: Vec<usize> = (0..n).collect();
                        o.sort_by_key(|&i| (std::cmp::Reverse(addrs[i] >> 14), addrs[i]));
                        o
                    }
                    // Any order.
                    _ => order,
                };
                World {
                    addrs,
                    kinds,
                    sites,
                    refs,
                    roots,
                    shuffle,
                }
            })
    })
}

impl World {
    fn missing(&self, k: usize) -> u64 {
        // Odd addresses: never an object's.
        BASE - 8 * (k as u64 + 1) - 3
    }

    fn addr_of(&self, t: &Option<usize>, k: usize) -> u64 {
        match t {
            Some(i) => self.addrs[*i],
            None => self.missing(k),
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, targets) in &self.roots {
            let refs: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(k, t)| format!("\"{:#x}\"", self.addr_of(t, k)))
                .collect();
            out.push(format!(
                r#"{{"type":"ROOT", "root":"{name}", "references":[{}]}}"#,
                refs.join(", ")
            ));
        }
        for &i in &self.shuffle {
            let refs: Vec<String> = self.refs[i]
                .iter()
                .enumerate()
                .map(|(k, t)| format!("\"{:#x}\"", self.addr_of(t, k)))
                .collect();
            let kind = KINDS[self.kinds[i] as usize];
            let name = if kind == "MODULE" {
                format!(r#", "name":"Mod{i}""#)
            } else {
                String::new()
            };
            let site = if self.sites[i] > 0 {
                format!(r#", "file":"/app/s.rb", "line":{}"#, self.sites[i])
            } else {
                String::new()
            };
            let refs = if refs.is_empty() {
                String::new()
            } else {
                format!(r#", "references":[{}]"#, refs.join(", "))
            };
            out.push(format!(
                r#"{{"address":"{:#x}", "type":"{kind}", "class":"0x10"{name}{refs}{site}, "memsize":{}}}"#,
                self.addrs[i],
                40 + i
            ));
        }
        out
    }

    /// Edges among objects of the dump.
    fn succ(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.refs[i].iter().flatten().copied()
    }

    /// BFS distance (in objects) from any root: the root's targets are at 1.
    fn root_distances(&self) -> Vec<Option<usize>> {
        let seeds: Vec<usize> = self
            .roots
            .iter()
            .flat_map(|(_, t)| t.iter().flatten().copied())
            .collect();
        self.bfs(&seeds)
    }

    fn bfs(&self, seeds: &[usize]) -> Vec<Option<usize>> {
        let mut dist = vec![None; self.addrs.len()];
        let mut q = VecDeque::new();
        for &s in seeds {
            if dist[s].is_none() {
                dist[s] = Some(1);
                q.push_back(s);
            }
        }
        while let Some(v) = q.pop_front() {
            for t in self.succ(v) {
                if dist[t].is_none() {
                    dist[t] = Some(dist[v].unwrap_or(0) + 1);
                    q.push_back(t);
                }
            }
        }
        dist
    }

    fn index_of(&self, addr: &str) -> usize {
        let a = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        self.addrs.iter().position(|&x| x == a).unwrap()
    }
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    path
}

fn read(path: &Path) -> (Heap, Graph) {
    let mut heap = Heap::read_with_references(&Input::Local(path.to_path_buf()), &no_progress)
        .expect("readable dump");
    let graph = Graph::build(&mut heap).expect("read with references");
    (heap, graph)
}

/// The heap index of world object `i`.
fn heap_index(heap: &Heap, w: &World, i: usize) -> u32 {
    heap.objects
        .iter()
        .position(|o| o.addr == w.addrs[i])
        .unwrap() as u32
}

/// Check one reported path to world object `target`: a real chain of
/// references from its first step, and a shortest one.
fn check_path(w: &World, path: &[Step], target: usize, dist: &[Option<usize>]) {
    let first = &path[0];
    let objects: Vec<&Step> = path[1..].iter().collect();
    let last = objects.last().expect("a path ends at an object");
    assert_eq!(w.index_of(last.address.as_deref().unwrap()), target);
    // Length in objects, elided steps counted.
    let len: u64 = objects.iter().map(|s| s.elided.unwrap_or(1)).sum();
    // Consecutive objects (no elision between them) are a reference.
    for pair in objects.windows(2) {
        if pair[0].ty == "ELIDED" || pair[1].ty == "ELIDED" {
            continue;
        }
        let a = w.index_of(pair[0].address.as_deref().unwrap());
        let b = w.index_of(pair[1].address.as_deref().unwrap());
        assert!(
            w.succ(a).any(|t| t == b),
            "{a} does not refer to {b}: {path:#?}"
        );
    }
    let head = w.index_of(objects[0].address.as_deref().unwrap());
    match first.ty.as_str() {
        "ROOT" => {
            assert!(!first.outside_dump);
            let name = first.name.as_deref().unwrap();
            let (_, held) = w.roots.iter().find(|(n, _)| n == name).unwrap();
            assert!(
                held.contains(&Some(head)),
                "root {name} does not hold {head}"
            );
            assert_eq!(
                Some(len as usize),
                dist[target],
                "not a shortest path: {path:#?}"
            );
        }
        "OUTSIDE" => {
            assert!(first.outside_dump);
            assert_eq!(
                dist[target], None,
                "reachable from a root, yet reported outside"
            );
            // From the unreached objects nothing in the dump refers to, when one reaches it.
            let referred: HashSet<usize> = (0..w.addrs.len()).flat_map(|i| w.succ(i)).collect();
            let entries: Vec<usize> = (0..w.addrs.len())
                .filter(|&i| dist[i].is_none() && !referred.contains(&i))
                .collect();
            let from_entries = w.bfs(&entries);
            if let Some(d) = from_entries[target] {
                assert!(
                    !referred.contains(&head),
                    "{head} is referred to: {path:#?}"
                );
                assert_eq!(
                    len as usize, d,
                    "not a shortest path from outside: {path:#?}"
                );
            }
        }
        other => panic!("a path starts at a root or outside, not {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_path_is_a_shortest_chain_of_references(w in world()) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "heap.jsonl", &w.lines());
        let (heap, graph) = read(&path);
        prop_assert_eq!(heap.objects.len(), w.addrs.len());
        let dist = w.root_distances();
        // Each object as a site of its own: exactly one path, to it.
        for i in 0..w.addrs.len() {
            let held = graph.held_by(&heap, &[heap_index(&heap, &w, i)]);
            prop_assert_eq!(held.held_by_sampled, 1);
            prop_assert_eq!(held.held_by.len(), 1);
            let p = &held.held_by[0];
            check_path(&w, p, i, &dist);
            prop_assert_eq!(p.iter().filter_map(|s| s.holds).sum::<u64>(), 1);
        }
        // A real site (all objects of one allocation line): one path per holder,
        // each to an object of the site, holds adding up to the sample.
        for line in 1..4 {
            let members: Vec<usize> = (0..w.addrs.len())
                .filter(|&i| w.sites[i] == line && w.kinds[i] == 0)
                .collect();
            if members.is_empty() {
                continue;
            }
            let idx: Vec<u32> = members.iter().map(|&i| heap_index(&heap, &w, i)).collect();
            let held = graph.held_by(&heap, &idx);
            prop_assert_eq!(held.held_by_sampled, members.len() as u64);
            prop_assert!(!held.held_by.is_empty() && held.held_by.len() <= MAX_PATHS);
            let mut total = 0;
            for p in &held.held_by {
                let last = w.index_of(p.last().unwrap().address.as_deref().unwrap());
                prop_assert!(members.contains(&last));
                check_path(&w, p, last, &dist);
                let holds: Vec<u64> = p.iter().filter_map(|s| s.holds).collect();
                prop_assert_eq!(holds.len(), 1, "one holder step: {:#?}", p);
                total += holds[0];
            }
            let counts: Vec<u64> = held.held_by.iter().map(|p| p.iter().find_map(|s| s.holds).unwrap()).collect();
            prop_assert!(counts.windows(2).all(|c| c[0] >= c[1]), "most objects first: {:?}", counts);
            if held.held_by.len() < MAX_PATHS {
                prop_assert_eq!(total, members.len() as u64);
            }
        }
    }
}

/// A linked list 3 * KEEP_STEPS long from a root: the middle of its path is
/// elided, both ends and the length kept.
#[test]
fn long_paths_keep_both_ends() {
    let n = 3 * KEEP_STEPS;
    let w = World {
        addrs: (0..n as u64).map(|i| BASE + 40 * i).collect(),
        kinds: vec![3; n],
        sites: vec![0; n],
        refs: (0..n)
            .map(|i| if i + 1 < n { vec![Some(i + 1)] } else { vec![] })
            .collect(),
        roots: vec![("vm".into(), vec![Some(0)])],
        shuffle: (0..n).collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let (heap, graph) = read(&write(dir.path(), "list.jsonl", &w.lines()));
    let held = graph.held_by(&heap, &[heap_index(&heap, &w, n - 1)]);
    let p = &held.held_by[0];
    assert_eq!(p.len(), 1 + 2 * KEEP_STEPS + 1, "{p:#?}");
    assert_eq!(p[KEEP_STEPS + 1].elided, Some(KEEP_STEPS as u64));
    check_path(&w, p, n - 1, &w.root_distances());
}

const STRING_CLASS: &str = "0x7f0000000010";

fn class_lines(extra_root_refs: &[u64]) -> Vec<String> {
    let mut refs = vec![
        "\"0x7f0000000010\"".to_string(),
        "\"0x7f0000000030\"".to_string(),
    ];
    refs.extend(extra_root_refs.iter().map(|a| format!("\"{a:#x}\"")));
    vec![
        format!(
            r#"{{"type":"ROOT", "root":"vm", "references":[{}]}}"#,
            refs.join(", ")
        ),
        format!(
            r#"{{"address":"{STRING_CLASS}", "type":"CLASS", "class":"0x7f0000000001", "name":"String", "references":[], "memsize":544}}"#
        ),
    ]
}

/// `module Audit; LOG = []; end` holding `strings`.
fn audit_module(strings: &[u64], extra: &str) -> Vec<String> {
    let refs: Vec<String> = strings.iter().map(|a| format!("\"{a:#x}\"")).collect();
    vec![
        r#"{"address":"0x7f0000000030", "type":"MODULE", "class":"0x7f0000000002", "name":"Audit", "references":["0x7f0000000040"], "memsize":400}"#.to_string(),
        format!(
            r#"{{"address":"0x7f0000000040", "type":"ARRAY", "class":"0x7f0000000003", "length":{}, "references":[{}], "file":"/app/models/audit.rb", "line":3, "generation":2, "memsize":{}{extra}}}"#,
            strings.len(),
            refs.join(", "),
            40 + 8 * strings.len()
        ),
    ]
}

fn string_at(addr: u64, line: u32) -> String {
    format!(
        r#"{{"address":"{addr:#x}", "type":"STRING", "class":"{STRING_CLASS}", "bytesize":5, "file":"/app/audit.rb", "line":{line}, "generation":5, "memsize":40}}"#
    )
}

#[test]
fn diff_names_the_module_that_holds_the_leak() {
    let dir = tempfile::tempdir().unwrap();
    let leaked: Vec<u64> = (0..6).map(|i| 0x7f0000001000 + 40 * i).collect();
    let d1 = [class_lines(&[]), audit_module(&[], "")].concat();
    let mut d2 = [class_lines(&[]), audit_module(&leaked[..4], "")].concat();
    d2.extend(leaked[..4].iter().map(|&a| string_at(a, 9)));
    let mut d3 = [class_lines(&[]), audit_module(&leaked, "")].concat();
    d3.extend(leaked.iter().map(|&a| string_at(a, 9)));
    let [a, b, c] = [("1.jsonl", &d1), ("2.jsonl", &d2), ("3.jsonl", &d3)]
        .map(|(name, lines)| Input::Local(write(dir.path(), name, lines)));
    let d = analysis::diff([&a, &b, &c], &no_progress, 10).unwrap();
    assert_eq!(d.sites[0].location, "/app/audit.rb:9");
    let paths = d.sites[0].paths.as_ref().expect("the top site has paths");
    assert_eq!(
        paths.held_by_sampled, 4,
        "the 4 retained objects, found in dump 3"
    );
    assert_eq!(paths.held_by.len(), 1);
    let p = &paths.held_by[0];
    let shape: Vec<(&str, Option<&str>)> = p
        .iter()
        .map(|s| (s.ty.as_str(), s.name.as_deref()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("ROOT", Some("vm")),
            ("MODULE", Some("Audit")),
            ("ARRAY", None),
            ("STRING", None)
        ]
    );
    assert_eq!(p[2].file.as_deref(), Some("/app/models/audit.rb"));
    assert_eq!(
        (p[2].line, p[2].memsize, p[2].holds),
        (Some(3), Some(40 + 8 * 6), Some(4))
    );
    assert_eq!(p[3].class.as_deref(), Some("String"));
    assert!(paths.held_by_dump.ends_with("3.jsonl"));
    // The JSON schema scripts read.
    let json = serde_json::to_value(&d.sites[0]).unwrap();
    assert_eq!(
        json["held_by"][0][0],
        serde_json::json!({"address": null, "type": "ROOT", "class": null, "name": "vm", "file": null, "line": null, "memsize": null})
    );
    assert_eq!(json["held_by"][0][2]["holds"], 4);
    assert_eq!(
        json["held_by"][0][3]["address"],
        format!("{:#x}", leaked[0])
    );
}

#[test]
fn objects_held_only_through_missing_objects_start_outside_the_dump() {
    let dir = tempfile::tempdir().unwrap();
    // The root holds 0x7f0000009000, which the dump lacks; it held the array.
    let mut lines = class_lines(&[0x7f0000009000]);
    lines.push(
        r#"{"address":"0x7f0000000030", "type":"MODULE", "name":"Audit", "memsize":400}"#.into(),
    );
    lines.push(r#"{"address":"0x7f0000000050", "type":"ARRAY", "references":["0x7f0000001000", "0x7f0000001028"], "file":"/app/a.rb", "line":1, "memsize":80}"#.into());
    lines.push(string_at(0x7f0000001000, 9));
    lines.push(string_at(0x7f0000001028, 9));
    let path = write(dir.path(), "heap.jsonl", &lines);
    let (heap, graph) = read(&path);
    assert_eq!(
        graph.outside, 1,
        "the array: nothing in the dump refers to it"
    );
    let idx: Vec<u32> = (0..heap.objects.len() as u32)
        .filter(|&i| heap.objects[i as usize].line == 9)
        .collect();
    let held = graph.held_by(&heap, &idx);
    assert_eq!(held.held_by.len(), 1);
    let p = &held.held_by[0];
    assert_eq!(p[0].ty, "OUTSIDE");
    assert!(p[0].outside_dump);
    assert_eq!(
        p[0].name.as_deref(),
        Some("not reachable from this dump's roots")
    );
    assert_eq!((p[1].ty.as_str(), p[1].holds), ("ARRAY", Some(2)));
    assert_eq!(p.len(), 3);
}

#[test]
fn a_retained_session_gives_leaks_paths_from_outside_the_dump() {
    // Retained dumps: no ROOT records, no objects from before the baseline
    // (the Audit module is a before_baseline name only).
    let dir = tempfile::tempdir().unwrap();
    let mut strings = Vec::new();
    for seq in 1..=6u64 {
        strings.push(0x7f0000002000 + 40 * seq);
        let mut lines = vec![
            r#"{"address":"0x7f0000000030", "type":"MODULE", "name":"Audit", "before_baseline":true}"#.to_string(),
            format!(r#"{{"address":"{STRING_CLASS}", "type":"CLASS", "name":"String", "before_baseline":true}}"#),
        ];
        // A hash allocated in the request holds the strings.
        let refs: Vec<String> = strings.iter().map(|a| format!("\"{a:#x}\"")).collect();
        lines.push(format!(
            r#"{{"address":"0x7f0000000070", "type":"HASH", "references":[{}], "file":"/app/cache.rb", "line":4, "generation":3, "memsize":200}}"#,
            refs.join(", ")
        ));
        lines.extend(strings.iter().map(|&a| string_at(a, 9)));
        let stem = format!(
            "web-1/7/{seq:06}-{}-GET-leak-0000abcd",
            1_700_000_000_000u64 + seq
        );
        write(dir.path(), &format!("{stem}.jsonl"), &lines);
        std::fs::write(
            dir.path().join(format!("{stem}.meta.json")),
            format!(
                r#"{{"host":"web-1","pid":7,"seq":{seq},"dump":"retained","gc_generation":{}}}"#,
                seq * 3
            ),
        )
        .unwrap();
    }
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 1).unwrap();
    let top = &r.sites[0];
    assert_eq!(top.site.location, "/app/audit.rb:9");
    let paths = top.site.paths.as_ref().expect("leaking sites have paths");
    assert!(
        paths.held_by_dump.contains("000006-"),
        "the last dump: {}",
        paths.held_by_dump
    );
    let p = &paths.held_by[0];
    assert_eq!(p[0].ty, "OUTSIDE");
    assert!(p[0].outside_dump);
    assert_eq!(p[0].name.as_deref(), Some("outside the dump"));
    assert_eq!(
        (p[1].ty.as_str(), p[1].file.as_deref(), p[1].holds),
        ("HASH", Some("/app/cache.rb"), Some(6))
    );
    assert_eq!(p[2].class.as_deref(), Some("String"));
    let json = serde_json::to_value(top).unwrap();
    assert_eq!(json["held_by"][0][0]["outside_dump"], true);
    assert_eq!(json["held_by_sampled"], 6);
}

#[test]
fn leaks_take_paths_from_the_last_full_dump() {
    let dir = tempfile::tempdir().unwrap();
    let mut strings = Vec::new();
    for seq in 1..=6u64 {
        strings.push(0x7f0000002000 + 40 * seq);
        let mut lines = [class_lines(&[]), audit_module(&strings, "")].concat();
        lines.extend(strings.iter().map(|&a| string_at(a, 9)));
        let stem = format!(
            "web-1/8/{seq:06}-{}-GET-leak-0000abcd",
            1_700_000_000_000u64 + seq
        );
        write(dir.path(), &format!("{stem}.jsonl"), &lines);
        // The 6th dump is retained (no module, no roots), the 5th the last full one.
        let kind = if seq == 6 { "retained" } else { "full" };
        std::fs::write(
            dir.path().join(format!("{stem}.meta.json")),
            format!(r#"{{"host":"web-1","pid":8,"seq":{seq},"dump":"{kind}"}}"#),
        )
        .unwrap();
    }
    let r = analysis::leaks(dir.path().to_str().unwrap(), &no_progress, 0, 1).unwrap();
    let paths = r.sites[0].site.paths.as_ref().unwrap();
    assert!(
        paths.held_by_dump.contains("000005-"),
        "{}",
        paths.held_by_dump
    );
    assert_eq!(paths.held_by_sampled, 5);
    let names: Vec<Option<&str>> = paths.held_by[0].iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(&names[..2], &[Some("vm"), Some("Audit")]);
}
