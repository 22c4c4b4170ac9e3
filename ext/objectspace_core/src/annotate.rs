//! Joining a `dump_all` with the allocation-site table ([`crate::sites`]): each
//! record of an object allocated while tracing gets `"file"`, `"line"` and
//! `"generation"`, as `ObjectSpace.trace_object_allocations` would have written,
//! and `"request"`: the 1-based sequence number, in this process, of the request
//! during which the object was allocated (the census's `requests` count; absent
//! for objects allocated before the first request),
//! and a retained dump keeps only objects allocated at or after its baseline
//! generation (what `dump_all(since:)` does with objspace's tracing).
//!
//! A retained dump also keeps a name-only record for each named class and
//! module from before the baseline, marked `"before_baseline":true`, so that
//! the analyser can name the class of every retained object. The analyser
//! does not count those records as objects.

use memchr::memmem::Finder;

use crate::scan::{leading_u64, parse_hex, quoted_len};
use crate::sites::SharedSites;

/// What to do with one record.
pub struct Annotator {
    sites: SharedSites,
    since: Option<u64>,
    generation: Finder<'static>,
    name: Finder<'static>,
    suffix: Vec<u8>,
    /// Records dropped because they are older than `since` (or untraced).
    pub dropped: u64,
}

const ADDRESS: &[u8] = b"{\"address\":\"0x";

impl Annotator {
    pub fn new(sites: SharedSites, since: Option<u64>) -> Self {
        Annotator {
            sites,
            since,
            generation: Finder::new(b"\"generation\":"),
            name: Finder::new(b"\"name\":\""),
            suffix: Vec::with_capacity(256),
            dropped: 0,
        }
    }

    /// Append `line` to `out` as it should be stored, through `copy` (which
    /// copies, or redacts while copying). Returns false if the record was
    /// dropped (nothing appended).
    pub fn process(
        &mut self,
        line: &[u8],
        out: &mut Vec<u8>,
        copy: impl FnOnce(&[u8], &mut Vec<u8>),
    ) -> bool {
        self.suffix.clear();
        let Some(address) = address_of(line) else {
            // ROOT records and anything without an address: a retained dump
            // (like dump_all(since:)) has none.
            if self.since.is_some() {
                self.dropped += 1;
                return false;
            }
            copy(line, out);
            return true;
        };
        let generation = match self.generation.find(line) {
            // objspace's own tracing already wrote the fields: keep them, and
            // add the request number if the native tracer saw the object too.
            Some(at) => {
                let sites = self.sites.lock();
                if let Some(record) = sites.lookup(address).filter(|r| r.request > 0) {
                    self.suffix.extend_from_slice(b", \"request\":");
                    self.suffix
                        .extend_from_slice(record.request.to_string().as_bytes());
                }
                leading_u64(&line[at + self.generation.needle().len()..])
            }
            None => {
                let sites = self.sites.lock();
                match sites.lookup(address) {
                    Some(record) => {
                        if let Some(file) = record.file_json {
                            self.suffix.extend_from_slice(b", \"file\":\"");
                            self.suffix.extend_from_slice(file.as_bytes());
                            self.suffix.extend_from_slice(b"\", \"line\":");
                            self.suffix
                                .extend_from_slice(record.line.to_string().as_bytes());
                        }
                        self.suffix.extend_from_slice(b", \"generation\":");
                        self.suffix
                            .extend_from_slice(record.generation.to_string().as_bytes());
                        if record.request > 0 {
                            self.suffix.extend_from_slice(b", \"request\":");
                            self.suffix
                                .extend_from_slice(record.request.to_string().as_bytes());
                        }
                        Some(u64::from(record.generation))
                    }
                    None => None,
                }
            }
        };
        if let Some(since) = self.since {
            if generation.is_none_or(|g| g < since) {
                self.dropped += 1;
                if let Some(name) = self.class_name(line) {
                    out.extend_from_slice(&line[..name.0]);
                    out.extend_from_slice(b"\", \"name\":\"");
                    out.extend_from_slice(&line[name.1..name.2]);
                    out.extend_from_slice(b"\", \"before_baseline\":true}\n");
                }
                return false;
            }
        }
        let start = out.len();
        copy(line, out);
        if !self.suffix.is_empty() {
            let written = &out[start..];
            let close = if written.ends_with(b"}\n") {
                2
            } else if written.ends_with(b"}") {
                1
            } else {
                return true; // cut short: leave it as it came
            };
            let tail: &[u8] = if close == 2 { b"}\n" } else { b"}" };
            out.truncate(out.len() - close);
            out.extend_from_slice(&self.suffix);
            out.extend_from_slice(tail);
        }
        true
    }

    /// For a CLASS or MODULE record with a name: (end of the type string,
    /// start and end of the name's JSON content).
    fn class_name(&self, line: &[u8]) -> Option<(usize, usize, usize)> {
        let type_at = memchr::memmem::find(line, b"\"type\":\"")? + 8;
        let rest = &line[type_at..];
        let ty_len = if rest.starts_with(b"CLASS\"") {
            5
        } else if rest.starts_with(b"MODULE\"") {
            6
        } else {
            return None;
        };
        let name_at = self.name.find(line)? + self.name.needle().len();
        let len = quoted_len(&line[name_at..])?;
        Some((type_at + ty_len, name_at, name_at + len))
    }
}

/// The address of a `dump_all` record, which always comes first.
fn address_of(line: &[u8]) -> Option<u64> {
    let hex = line.strip_prefix(ADDRESS)?;
    let len = memchr::memchr(b'"', &hex[..hex.len().min(17)])?;
    parse_hex(&hex[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::SiteTable;
    use std::sync::Arc;

    fn table() -> SharedSites {
        let mut t = SiteTable::default();
        t.record(0x7f00_0000_0028, Some((1, b"app/models/user.rb")), 12, 5);
        t.record(0x7f00_0000_0050, None, 0, 9);
        t.set_request(3);
        t.record(0x7f00_0000_0078, Some((1, b"app/models/user.rb")), 3, 2);
        Arc::new(parking_lot::Mutex::new(t))
    }

    fn run(annotator: &mut Annotator, dump: &str) -> String {
        let mut out = Vec::new();
        for line in dump.split_inclusive('\n') {
            annotator.process(line.as_bytes(), &mut out, |l, o| o.extend_from_slice(l));
        }
        String::from_utf8(out).unwrap()
    }

    const DUMP: &str = concat!(
        "{\"type\":\"ROOT\", \"root\":\"vm\", \"references\":[\"0x7f0000000028\"]}\n",
        "{\"address\":\"0x7f0000000028\", \"type\":\"STRING\", \"bytesize\":3, \"memsize\":40}\n",
        "{\"address\":\"0x7f0000000050\", \"type\":\"ARRAY\", \"length\":0, \"memsize\":40}\n",
        "{\"address\":\"0x7f0000000078\", \"type\":\"HASH\", \"size\":0, \"memsize\":40}\n",
        "{\"address\":\"0x7f00000000a0\", \"type\":\"CLASS\", \"name\":\"Us\\\"er\", \"references\":[\"0x1\"], \"memsize\":500}\n",
        "{\"address\":\"0x7f00000000c8\", \"type\":\"OBJECT\", \"file\":\"x.rb\", \"line\":1, \"generation\":7, \"memsize\":40}\n",
    );

    #[test]
    fn a_full_dump_gets_sites_and_keeps_everything() {
        let mut a = Annotator::new(table(), None);
        let out = run(&mut a, DUMP);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[1], "{\"address\":\"0x7f0000000028\", \"type\":\"STRING\", \"bytesize\":3, \"memsize\":40, \"file\":\"app/models/user.rb\", \"line\":12, \"generation\":5}");
        assert_eq!(lines[2], "{\"address\":\"0x7f0000000050\", \"type\":\"ARRAY\", \"length\":0, \"memsize\":40, \"generation\":9}");
        assert_eq!(lines[3], "{\"address\":\"0x7f0000000078\", \"type\":\"HASH\", \"size\":0, \"memsize\":40, \"file\":\"app/models/user.rb\", \"line\":3, \"generation\":2, \"request\":3}");
        assert!(
            lines[4].ends_with("\"memsize\":500}"),
            "untraced: unchanged"
        );
        assert!(
            lines[5].ends_with("\"generation\":7, \"memsize\":40}"),
            "objspace's fields kept"
        );
        for line in out.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert_eq!(a.dropped, 0);
    }

    #[test]
    fn a_retained_dump_keeps_objects_since_the_baseline_and_class_names() {
        let mut a = Annotator::new(table(), Some(5));
        let out = run(&mut a, DUMP);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("{\"address\":\"0x7f0000000028\""));
        assert!(lines[1].starts_with("{\"address\":\"0x7f0000000050\""));
        assert_eq!(lines[2], "{\"address\":\"0x7f00000000a0\", \"type\":\"CLASS\", \"name\":\"Us\\\"er\", \"before_baseline\":true}");
        assert!(lines[3].starts_with("{\"address\":\"0x7f00000000c8\""));
        for line in out.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        // ROOT, the HASH of generation 2 and the CLASS (kept by name only).
        assert_eq!(a.dropped, 3);
    }

    #[test]
    fn a_record_cut_short_is_not_extended() {
        let mut a = Annotator::new(table(), None);
        let out = run(&mut a, "{\"address\":\"0x7f0000000028\", \"type\":\"STR");
        assert_eq!(out, "{\"address\":\"0x7f0000000028\", \"type\":\"STR");
    }

    #[test]
    fn addresses_are_read_strictly() {
        assert_eq!(address_of(b"{\"address\":\"0x1f\", "), Some(0x1f));
        assert_eq!(address_of(b"{\"address\":\"0x\", "), None);
        assert_eq!(address_of(b"{\"address\":\"0xzz\""), None);
        assert_eq!(address_of(b"{\"address\":\"0x11111111111111111\""), None);
        assert_eq!(address_of(b"{\"type\":\"ROOT\"}"), None);
    }
}
