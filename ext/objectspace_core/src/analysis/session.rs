//! The dumps of a session (a folder or store URL the middleware writes to):
//! each dump's key, input and metadata ([`Meta`]), and the listing `ls`
//! prints.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::error::AnalysisError;
use super::source::{local_path, Input, Place};
use crate::keys::DumpKey;

const DUMP_SUFFIXES: [&str; 4] = [".jsonl.gz", ".jsonl", ".json.gz", ".json"];
const META_SUFFIX: &str = ".meta.json";

/// The metadata the middleware writes beside each dump. Every field is optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Meta {
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub seq: Option<u64>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    pub started_at_ms: Option<u64>,
    pub gc_generation: Option<u64>,
    pub baseline_generation: Option<u64>,
    /// Requests the process had served, this one included (dumped or not).
    pub requests: Option<u64>,
    pub dump: Option<String>,
    pub mode: Option<String>,
    pub lines: Option<u64>,
    pub bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    /// Objects and memsize summed over the `types` table.
    pub objects: Option<u64>,
    pub memsize: Option<u64>,
}

impl Meta {
    /// Parse leniently: a field of the wrong type is treated as absent.
    pub fn parse(bytes: &[u8]) -> Option<Meta> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let o = v.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| o.get(k).and_then(Value::as_u64);
        let req = o.get("request").and_then(Value::as_object);
        let rs = |k: &str| {
            req.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (mut objects, mut memsize, mut any) = (0u64, 0u64, false);
        if let Some(types) = o.get("types").and_then(Value::as_object) {
            for t in types.values() {
                any = true;
                objects += t.get("count").and_then(Value::as_u64).unwrap_or(0);
                memsize += t.get("memsize").and_then(Value::as_u64).unwrap_or(0);
            }
        }
        Some(Meta {
            host: s("host"),
            pid: u("pid").and_then(|p| u32::try_from(p).ok()),
            seq: u("seq"),
            method: rs("method"),
            path: rs("path"),
            status: req.and_then(|r| r.get("status")).and_then(Value::as_i64),
            started_at_ms: u("started_at_ms"),
            gc_generation: u("gc_generation"),
            baseline_generation: u("baseline_generation"),
            requests: u("requests"),
            dump: s("dump"),
            mode: s("mode"),
            lines: u("lines"),
            bytes: u("bytes"),
            stored_bytes: u("stored_bytes"),
            objects: any.then_some(objects),
            memsize: any.then_some(memsize),
        })
    }
}

/// One dump found in a session source.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub input: Input,
    pub meta_input: Option<Input>,
    pub parsed: Option<DumpKey>,
}

/// A source of many dumps: a local folder or a store URL.
pub struct Session {
    pub name: String,
    pub entries: Vec<Entry>,
}

/// A dump's key without its suffix; None for a key that is not a dump.
pub(super) fn dump_stem(key: &str) -> Option<&str> {
    if key.ends_with(META_SUFFIX) {
        return None;
    }
    DUMP_SUFFIXES.iter().find_map(|s| key.strip_suffix(s))
}

impl Session {
    /// Find every dump under a folder or store URL.
    pub fn open(source: &str) -> Result<Session, AnalysisError> {
        if let Some(dir) = local_path(source) {
            let meta = std::fs::metadata(&dir).map_err(|e| AnalysisError::Read {
                source_name: source.to_string(),
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    "no such folder".to_string()
                } else {
                    e.to_string()
                },
            })?;
            if !meta.is_dir() {
                return Err(AnalysisError::Read {
                    source_name: source.to_string(),
                    message: "is a file; give the folder (or store URL) the middleware writes to"
                        .into(),
                });
            }
        }
        let (place, keys) = Place::list(source)?;
        let metas: std::collections::HashSet<&str> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_suffix(META_SUFFIX))
            .collect();
        let mut entries = Vec::new();
        for (key, size) in &keys {
            let Some(stem) = dump_stem(key) else { continue };
            let meta_input = metas
                .contains(stem)
                .then(|| place.input(&format!("{stem}{META_SUFFIX}")));
            entries.push(Entry {
                key: key.clone(),
                size: *size,
                input: place.input(key),
                meta_input,
                parsed: DumpKey::parse(&format!("{stem}.jsonl.gz")),
            });
        }
        Ok(Session {
            name: source.to_string(),
            entries,
        })
    }
}

impl Session {
    /// The dumps by process (host, pid), each process's in sequence order
    /// (then time, then key); dumps whose key names no process go under
    /// ("(unknown)", 0).
    pub fn by_process(self) -> BTreeMap<(String, u32), Vec<Entry>> {
        let mut groups: BTreeMap<(String, u32), Vec<Entry>> = BTreeMap::new();
        for e in self.entries {
            let key = match &e.parsed {
                Some(k) => (k.host.clone(), k.pid),
                None => ("(unknown)".to_string(), 0),
            };
            groups.entry(key).or_default().push(e);
        }
        for entries in groups.values_mut() {
            entries.sort_by(|a, b| {
                let ka = a.parsed.as_ref().map(|k| (k.seq, k.unix_ms));
                let kb = b.parsed.as_ref().map(|k| (k.seq, k.unix_ms));
                ka.cmp(&kb).then_with(|| a.key.cmp(&b.key))
            });
        }
        groups
    }
}

/// A dump as listed by `ls` and charted by `leaks`.
#[derive(Debug, Clone, Serialize)]
pub struct DumpInfo {
    pub key: String,
    pub host: String,
    pub pid: u32,
    pub seq: Option<u64>,
    pub unix_ms: Option<u64>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i64>,
    /// "full" or "retained", from the metadata.
    pub dump: Option<String>,
    pub gc_generation: Option<u64>,
    /// Requests the process had served when this dump was taken (from the metadata).
    pub requests: Option<u64>,
    /// Stored size in bytes.
    pub size: u64,
    /// Live objects and their memsize in the dump (from the metadata for `ls`,
    /// counted from the dump itself for `leaks`).
    pub objects: Option<u64>,
    pub memsize: Option<u64>,
}

/// The listing of a dump: what its key and metadata say.
pub(super) fn info(entry: &Entry, meta: &Option<Meta>) -> DumpInfo {
    let m = meta.clone().unwrap_or_default();
    let k = entry.parsed.as_ref();
    DumpInfo {
        key: entry.key.clone(),
        host: k
            .map(|k| k.host.clone())
            .or(m.host)
            .unwrap_or_else(|| "(unknown)".into()),
        pid: k.map(|k| k.pid).or(m.pid).unwrap_or(0),
        seq: k.map(|k| k.seq).or(m.seq),
        unix_ms: k.map(|k| k.unix_ms).or(m.started_at_ms),
        method: m.method.or_else(|| k.map(|k| k.method.clone())),
        path: m.path.or_else(|| k.map(|k| format!("/{}", k.slug))),
        status: m.status,
        dump: m.dump,
        gc_generation: m.gc_generation,
        requests: m.requests,
        size: entry.size,
        objects: m.objects,
        memsize: m.memsize,
    }
}

/// The metadata beside a dump, when there is one and it parses.
pub(super) fn read_meta(entry: &Entry) -> Option<Meta> {
    entry
        .meta_input
        .as_ref()
        .and_then(|i| i.read_all().ok())
        .and_then(|b| Meta::parse(&b))
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub command: &'static str,
    pub source: String,
    pub dumps: Vec<DumpInfo>,
    /// Each process's dumps, and how many its sequence numbers skip.
    pub processes: Vec<ListedProcess>,
}

/// A process as `ls` sees it.
#[derive(Debug, Serialize)]
pub struct ListedProcess {
    pub host: String,
    pub pid: u32,
    pub dumps: usize,
    /// Dumps asked for but not in the store: gaps in `seq` (1, 2, ... per
    /// process), i.e. dumps dropped or failed.
    pub missing_dumps: u64,
}

/// Dumps missing from a process's 1-based sequence numbers: the highest
/// number minus the distinct numbers present.
pub fn missing_dumps(seqs: impl IntoIterator<Item = u64>) -> u64 {
    let mut seqs: Vec<u64> = seqs.into_iter().filter(|&s| s > 0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs.last().map_or(0, |&max| max - seqs.len() as u64)
}

/// List the dumps of a session with their metadata, ordered by process and sequence.
pub fn ls(source: &str) -> Result<Listing, AnalysisError> {
    let session = Session::open(source)?;
    let mut dumps: Vec<DumpInfo> = session
        .entries
        .iter()
        .map(|e| info(e, &read_meta(e)))
        .collect();
    dumps.sort_by(|a, b| (&a.host, a.pid, a.seq, &a.key).cmp(&(&b.host, b.pid, b.seq, &b.key)));
    let mut processes: Vec<ListedProcess> = Vec::new();
    for d in &dumps {
        match processes.last_mut() {
            Some(p) if p.host == d.host && p.pid == d.pid => p.dumps += 1,
            _ => processes.push(ListedProcess {
                host: d.host.clone(),
                pid: d.pid,
                dumps: 1,
                missing_dumps: 0,
            }),
        }
    }
    for p in &mut processes {
        p.missing_dumps = missing_dumps(
            dumps
                .iter()
                .filter(|d| d.host == p.host && d.pid == p.pid)
                .filter_map(|d| d.seq),
        );
    }
    Ok(Listing {
        command: "ls",
        source: session.name,
        dumps,
        processes,
    })
}
