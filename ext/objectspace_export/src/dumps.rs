//! Per-dump summaries: one row per (dump, site) with the site's count and
//! memsize in that dump, the same rows as `rack-objectspace summary`.
//! One dump is read at a time (its object table, 40 bytes an object).

use std::collections::BTreeMap;
use std::rc::Rc;

use objectspace_core::analysis::heap::Heap;
use objectspace_core::analysis::session::{Entry, Meta, Session};
use objectspace_core::analysis::source::no_progress;
use objectspace_core::analysis::summary::summarize;
use parquet::data_type::ByteArray;

use crate::parts::{
    bytes, put_i64, put_opt_i32, put_opt_i64, put_opt_str, put_str, Parts, RowGroup, Rows,
};

/// What names one dump in its rows.
pub struct DumpInfo {
    host: ByteArray,
    pid: i64,
    seq: i64,
    key: ByteArray,
    at: Option<i64>,
    requests: Option<i64>,
    method: Option<ByteArray>,
    path: Option<ByteArray>,
}

/// One row of `dumps/`.
pub struct DumpRow {
    dump: Rc<DumpInfo>,
    file: Option<ByteArray>,
    line: Option<i32>,
    ty: ByteArray,
    class: Option<ByteArray>,
    gem: Option<ByteArray>,
    count: i64,
    memsize: i64,
}

impl Rows for DumpRow {
    const SCHEMA: &'static str = "
        message dumps {
            required binary host (STRING);
            required int64 pid;
            required int64 seq;
            required binary key (STRING);
            optional int64 at (TIMESTAMP(MILLIS,true));
            optional int64 requests;
            optional binary method (STRING);
            optional binary path (STRING);
            optional binary file (STRING);
            optional int32 line;
            required binary type (STRING);
            optional binary class (STRING);
            optional binary gem (STRING);
            required int64 count;
            required int64 memsize;
        }";
    const VERSION: &'static str = "dumps/1";

    fn write(rows: &[Self], g: &mut RowGroup<'_>) -> parquet::errors::Result<()> {
        put_str(g, rows.iter().map(|r| &r.dump.host))?;
        put_i64(g, rows.iter().map(|r| r.dump.pid))?;
        put_i64(g, rows.iter().map(|r| r.dump.seq))?;
        put_str(g, rows.iter().map(|r| &r.dump.key))?;
        put_opt_i64(g, rows.iter().map(|r| r.dump.at))?;
        put_opt_i64(g, rows.iter().map(|r| r.dump.requests))?;
        put_opt_str(g, rows.iter().map(|r| r.dump.method.as_ref()))?;
        put_opt_str(g, rows.iter().map(|r| r.dump.path.as_ref()))?;
        put_opt_str(g, rows.iter().map(|r| r.file.as_ref()))?;
        put_opt_i32(g, rows.iter().map(|r| r.line))?;
        put_str(g, rows.iter().map(|r| &r.ty))?;
        put_opt_str(g, rows.iter().map(|r| r.class.as_ref()))?;
        put_opt_str(g, rows.iter().map(|r| r.gem.as_ref()))?;
        put_i64(g, rows.iter().map(|r| r.count))?;
        put_i64(g, rows.iter().map(|r| r.memsize))
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The dumps of `session` by host, each host's in (pid, seq) order, with their metadata.
pub fn by_host(session: Session) -> BTreeMap<String, Vec<(Entry, Meta)>> {
    let mut out: BTreeMap<String, Vec<(Entry, Meta)>> = BTreeMap::new();
    for entry in session.entries {
        let meta = entry
            .meta_input
            .as_ref()
            .and_then(|m| m.read_all().ok())
            .and_then(|b| Meta::parse(&b))
            .unwrap_or_default();
        let host = entry
            .parsed
            .as_ref()
            .map(|k| k.host.clone())
            .or_else(|| meta.host.clone())
            .unwrap_or_else(|| "unknown".to_string());
        out.entry(host).or_default().push((entry, meta));
    }
    for dumps in out.values_mut() {
        dumps.sort_by_key(|(e, m)| {
            let pid = e.parsed.as_ref().map(|k| k.pid).or(m.pid).unwrap_or(0);
            let seq = e.parsed.as_ref().map(|k| k.seq).or(m.seq).unwrap_or(0);
            (pid, seq, e.key.clone())
        });
    }
    out
}

/// Summarise one dump into `parts`. Returns its rows.
pub fn export_dump(
    host: &str,
    entry: &Entry,
    meta: &Meta,
    parts: &mut Parts<DumpRow>,
) -> Result<u64, String> {
    let heap = Heap::read(&entry.input, &no_progress).map_err(|e| e.to_string())?;
    let summary = summarize(&heap, 0);
    drop(heap);
    let parsed = entry.parsed.as_ref();
    let dump = Rc::new(DumpInfo {
        host: bytes(host),
        pid: i64::from(parsed.map(|k| k.pid).or(meta.pid).unwrap_or(0)),
        seq: clamp(parsed.map(|k| k.seq).or(meta.seq).unwrap_or(0)),
        key: bytes(&entry.key),
        at: meta.started_at_ms.or(parsed.map(|k| k.unix_ms)).map(clamp),
        requests: meta.requests.map(clamp),
        method: meta.method.as_deref().map(bytes),
        path: meta.path.as_deref().map(bytes),
    });
    let mut n = 0;
    for site in summary.sites {
        parts.push(DumpRow {
            dump: dump.clone(),
            file: site.file.as_deref().map(bytes),
            line: site.line.map(|l| i32::try_from(l).unwrap_or(i32::MAX)),
            ty: bytes(&site.ty),
            class: site.class.as_deref().map(bytes),
            gem: site.gem.as_deref().map(bytes),
            count: clamp(site.count),
            memsize: clamp(site.memsize),
        })?;
        n += 1;
    }
    Ok(n)
}
