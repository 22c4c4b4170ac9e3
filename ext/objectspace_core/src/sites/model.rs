//! The data every part of the site table shares: an object's entry, a site's
//! census counters, and what the table reports. Imports none of its siblings.

/// Smallest distance between two Ruby objects (sizeof(RVALUE) on 64-bit).
pub const SLOT_SIZE: u64 = 40;
pub(super) const SLOT: u64 = SLOT_SIZE;

/// Path id of "allocated with no Ruby frame" (no file, no line).
pub(super) const NO_FILE: u32 = 1;

/// One recorded object, in the address slab.
#[derive(Clone, Copy, Default)]
pub(super) struct Entry {
    /// 0: nothing recorded; else a site id (an index into the sites + 1).
    pub(super) site: u32,
    pub(super) generation: u32,
    /// The census request sequence number of the request the allocating
    /// thread served (0: none).
    pub(super) request: u32,
}

/// One allocation site and its census counters.
#[derive(Clone, Debug, Default)]
pub(super) struct SiteInfo {
    /// NO_FILE, or a file name's id (an index into the file names + 2).
    pub(super) path: u32,
    pub(super) line: u32,
    pub(super) ty: u8,
    /// Objects recorded here and not freed since.
    pub(super) live: u64,
    /// `live` at the end of the last sweep.
    pub(super) at_gc: u64,
    /// Mean memsize of one object, from the last heap walk (0: never walked).
    pub(super) mean_size: u64,
    /// Class name, when a heap walk found one (T_OBJECT, T_DATA, T_STRUCT).
    pub(super) class: Option<Box<str>>,
    pub(super) dirty: bool,
    /// Objects recorded here since the GC of `epoch` began, by requests
    /// other than the one that GC began in.
    pub(super) young: u64,
    pub(super) epoch: u32,
    /// Live objects recorded here by the last request to allocate here
    /// (`req_a`), and by the one before it (`req_b`).
    pub(super) req_a: u32,
    pub(super) cnt_a: u64,
    pub(super) req_b: u32,
    pub(super) cnt_b: u64,
    /// GCs in a row at which `at_gc` rose (see [`crate::callers`]).
    pub(super) rises: u8,
    /// Allocations here until the next caller sample (0: not sampled).
    pub(super) countdown: u32,
}

/// The one count-out: the object of `entry` is gone (freed, or its slot
/// reused before a reconciliation saw it free, or not followed when
/// compaction moved it). Count it out of its site and add it to `gone`, the
/// table's tally of such objects. An empty entry counts nothing.
#[inline]
pub(super) fn count_out(sites: &mut [SiteInfo], gone: &mut u64, entry: Entry) {
    if entry.site == 0 {
        return;
    }
    let s = &mut sites[(entry.site - 1) as usize];
    s.live = s.live.saturating_sub(1);
    if entry.request == s.req_a {
        s.cnt_a = s.cnt_a.saturating_sub(1);
    } else if entry.request == s.req_b {
        s.cnt_b = s.cnt_b.saturating_sub(1);
    }
    *gone += 1;
}

/// One object's record: where and when it was allocated (its site's file
/// and line, the GC generation and the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectRecord<'a> {
    /// The file as Ruby gave it; None when no Ruby frame.
    pub file: Option<&'a [u8]>,
    /// The same, escaped for the inside of a JSON string.
    pub file_json: Option<&'a str>,
    pub line: u32,
    pub generation: u32,
    /// The census request sequence number (1-based) of the request during
    /// which the object was allocated; 0 before the first request.
    pub request: u32,
}

/// A site as the census names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteName {
    /// The file name (invalid UTF-8 replaced); None for objects allocated
    /// with no Ruby frame.
    pub file: Option<String>,
    pub line: u32,
    pub ty: &'static str,
    pub class: Option<String>,
}

/// One site's census values as of the last sweep: (site id, live, memsize).
pub type Change = (u32, u64, u64);

/// Statistics for logs and `Native::Tracer.stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Allocations recorded since the table was made or cleared.
    pub recorded: u64,
    /// Recorded objects counted out as freed (census on).
    pub freed: u64,
    /// Allocations not recorded because the table was at `MAX_TABLE_BYTES`.
    pub unrecorded: u64,
    /// Distinct files seen.
    pub files: u64,
    /// Distinct sites (file, line, type).
    pub sites: u64,
    /// Bytes of entry arrays (the bulk of the table's memory).
    pub bytes: u64,
    /// Bytes of the site and file tables (estimated from their lengths).
    pub site_bytes: u64,
    /// Sweeps seen (census on), and the GC count of the last.
    pub sweeps: u64,
    pub swept_gc: u64,
    /// Reconciliations after a GC, and the heap slots they read.
    pub reconciles: u64,
    pub slots_read: u64,
    /// Recorded objects followed to a new address by GC compaction.
    pub moved: u64,
    /// GCs at which the census saw growth (`SiteTable::growth_gcs`).
    pub growth_gcs: u64,
    /// Which caps were reached.
    pub site_cap: bool,
    pub file_cap: bool,
    pub byte_cap: bool,
}

/// The name `ObjectSpace.dump_all` gives a Ruby type (`T_STRING` -> "STRING").
pub fn type_name(ty: u8) -> &'static str {
    match ty {
        0x01 => "OBJECT",
        0x02 => "CLASS",
        0x03 => "MODULE",
        0x04 => "FLOAT",
        0x05 => "STRING",
        0x06 => "REGEXP",
        0x07 => "ARRAY",
        0x08 => "HASH",
        0x09 => "STRUCT",
        0x0a => "BIGNUM",
        0x0b => "FILE",
        0x0c => "DATA",
        0x0d => "MATCH",
        0x0e => "COMPLEX",
        0x0f => "RATIONAL",
        0x14 => "SYMBOL",
        0x1a => "IMEMO",
        0x1b => "NODE",
        0x1c => "ICLASS",
        0x1d => "ZOMBIE",
        0x1e => "MOVED",
        _ => "UNKNOWN",
    }
}
