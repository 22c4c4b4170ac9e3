//! The census batch format, in one place: the records of a batch (types),
//! the writer [`super::Census::take_batch`] uses, the reader `leaks` and
//! `export` both read through, and what both need to replay a process's
//! batches (their order, the missing ones, where each GC's counts stand).
//! docs/formats.md describes the format for people.
//!
//! A batch is gzipped JSON lines. The first key of each line says what the
//! line is (the writer puts it first; a reader looks no further to choose):
//!
//! | first key  | record      |
//! |------------|-------------|
//! | `census`   | [`Header`]  |
//! | `site`     | [`Site`]    |
//! | `base`     | [`Base`]    |
//! | `walk`     | [`Walk`]    |
//! | `callers`  | [`Callers`] |
//! | `requests` | [`Point`]   |
//!
//! A line of another kind is skipped (a newer writer's); a line of a known
//! kind with a field missing or of the wrong type, a count of a site the
//! batch does not name, or a stream cut short is an error that names the
//! batch's key and the line.
//!
//! Optional fields take `#[serde(default)]` and are left out when empty, so
//! a field added later reads as its default in an older batch.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Deserializer, Serialize};

/// `[site, live objects, memsize]`.
pub type Count = (u32, u64, u64);

/// The format's version, the header's `census`.
pub const VERSION: u32 = 1;

/// The first line: who wrote the batch, and what made the series partial so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`VERSION`].
    pub census: u32,
    pub host: String,
    pub pid: u32,
    /// The batch's number in its process's series, from 1.
    pub seq: u64,
    /// Point lines in the batch (a closing point included).
    pub points: u64,
    /// Site lines in the batch.
    pub sites: u64,
    /// Points dropped so far in the series because the buffer was full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The site table's caps reached so far: `sites`, `files`, `bytes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capped: Vec<String>,
    /// A sampled census: its counts are of one request in `sample` (the
    /// reader scales them, see crate::sample). Absent (1): every allocation.
    #[serde(default = "one", skip_serializing_if = "is_exact")]
    pub sample: u64,
}

fn one() -> u64 {
    1
}

/// 1 (or 0, a header built by default): every allocation recorded.
fn is_exact(n: &u64) -> bool {
    *n <= 1
}

/// A site the batch's counts name by `site`: file, line, type and the class
/// of most of its live objects at the last heap walk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub site: u32,
    /// None for objects allocated with no Ruby frame.
    pub file: Option<String>,
    pub line: u32,
    #[serde(rename = "type")]
    pub ty: String,
    pub class: Option<String>,
}

/// Where a point or a base stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Requests the process had begun.
    pub requests: u64,
    /// `GC.count` then.
    pub gc_count: u64,
    /// The GC whose sweep the counts come from.
    pub swept_gc: u64,
    /// Milliseconds since the epoch.
    pub at: u64,
}

/// The state before the batch's first point: every site with live objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base<'a> {
    pub base: Stamp,
    pub counts: Cow<'a, [Count]>,
}

/// When a heap walk ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkAt {
    pub requests: u64,
    pub gc_count: u64,
}

/// A heap walk's live objects per site by allocating endpoint:
/// `[site, method, path, objects]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk<'a> {
    pub walk: WalkAt,
    #[serde(borrow)]
    pub endpoints: Vec<(u32, Text<'a>, Text<'a>, u64)>,
}

/// The app's lines behind sampled library sites, so far in the series:
/// `[site, file, line, samples]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callers<'a> {
    #[serde(borrow)]
    pub callers: Vec<(u32, Text<'a>, u32, u64)>,
}

/// One request (or the closing point, at the same `requests`): the
/// endpoints served since the previous point and the sites that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point<'a> {
    pub requests: u64,
    pub gc_count: u64,
    pub swept_gc: u64,
    /// The swept GC was major: its counts are exact.
    #[serde(default, skip_serializing_if = "is_false")]
    pub major: bool,
    pub at: u64,
    /// `[method, path, requests]`.
    #[serde(borrow, default)]
    pub endpoints: Vec<(Text<'a>, Text<'a>, u64)>,
    /// The sites whose values changed since the previous point.
    #[serde(default)]
    pub counts: Cow<'a, [Count]>,
}

impl Point<'_> {
    pub fn stamp(&self) -> Stamp {
        Stamp {
            requests: self.requests,
            gc_count: self.gc_count,
            swept_gc: self.swept_gc,
            at: self.at,
        }
    }
}

/// A line of a batch, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Header(Header),
    Site(Site),
    Base(Base<'a>),
    Walk(Walk<'a>),
    Callers(Callers<'a>),
    Point(Point<'a>),
}

impl Record<'_> {
    /// The first site the record counts (its `[site, ...]` entries) that is
    /// not in `named`; None for a header or a site line.
    fn unnamed_site(&self, named: &FxHashSet<u32>) -> Option<u32> {
        let unnamed = |site: &u32| !named.contains(site);
        match self {
            Record::Header(_) | Record::Site(_) => None,
            Record::Base(Base { counts, .. }) | Record::Point(Point { counts, .. }) => {
                counts.iter().map(|c| c.0).find(unnamed)
            }
            Record::Walk(walk) => walk.endpoints.iter().map(|e| e.0).find(unnamed),
            Record::Callers(callers) => callers.callers.iter().map(|c| c.0).find(unnamed),
        }
    }
}

/// A string borrowed from the line when it has no escapes: a batch's
/// endpoints and callers are read without allocating for most of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Text(Cow::Borrowed(text))
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Writes a batch: one record a line, then gzip.
pub struct Writer {
    text: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(bytes: usize) -> Writer {
        Writer {
            text: Vec::with_capacity(bytes),
        }
    }

    /// Append one record (a [`Header`], [`Site`], [`Base`], [`Walk`],
    /// [`Callers`] or [`Point`]) as a line.
    pub fn line(&mut self, record: &impl Serialize) {
        // Writing these types into a Vec cannot fail: no maps with
        // non-string keys, no failing Serialize impls.
        let _ = serde_json::to_writer(&mut self.text, record);
        self.text.push(b'\n');
    }

    /// The batch as stored: gzipped at level 1 (the census's thread, not
    /// the store, is the bottleneck).
    pub fn gzip(self) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(self.text.len() / 8),
            flate2::Compression::new(1),
        );
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&self.text);
        gz.finish().unwrap_or_default()
    }
}

/// Read one stored batch (gzipped or plain JSON lines), handing its
/// records to `each` in order. Every count, walk and caller names a site
/// an earlier line of the batch named. An error names `key` and the line;
/// errors `each` returns pass through unchanged.
pub fn read(
    key: &str,
    raw: &[u8],
    each: &mut dyn FnMut(Record<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let reader: Box<dyn Read + '_> = if raw.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut named: FxHashSet<u32> = FxHashSet::default();
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(format!(
                    "{key}: gzip stream truncated after line {n}; the batch was cut short"
                ))
            }
            Err(e) => return Err(format!("{key}: line {}: {e}", n + 1)),
        }
        n += 1;
        let complete = buf.ends_with(b"\n");
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let bad = |what: String| format!("{key}: line {n}: {what}");
        let Some(kind) = first_key(text) else {
            return Err(bad(
                match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                    Err(e) if e.is_eof() || !complete && e.is_syntax() => cut_short(text.len()),
                    Err(e) => format!("not a census record: {}", message(&e)),
                    Ok(_) => "not a census record: not a JSON object".to_string(),
                },
            ));
        };
        let record = match kind {
            "census" => Record::Header(parse(text, "header", complete).map_err(bad)?),
            "site" => Record::Site(parse(text, "site", complete).map_err(bad)?),
            "base" => Record::Base(parse(text, "base", complete).map_err(bad)?),
            "walk" => Record::Walk(parse(text, "walk", complete).map_err(bad)?),
            "callers" => Record::Callers(parse(text, "callers", complete).map_err(bad)?),
            "requests" => Record::Point(parse(text, "point", complete).map_err(bad)?),
            // A newer writer's record.
            _ => continue,
        };
        if let Record::Site(site) = &record {
            named.insert(site.site);
        }
        if let Some(site) = record.unnamed_site(&named) {
            return Err(bad(format!("site {site} is not named in this batch")));
        }
        each(record)?;
    }
    Ok(())
}

/// One record of `kind`; `complete` when its line ended with a newline.
fn parse<'a, T: Deserialize<'a>>(text: &'a [u8], kind: &str, complete: bool) -> Result<T, String> {
    serde_json::from_slice(text).map_err(|e| {
        if e.is_eof() || !complete && e.is_syntax() {
            cut_short(text.len())
        } else {
            format!("malformed {kind} record: {}", message(&e))
        }
    })
}

fn cut_short(bytes: usize) -> String {
    format!("record cut short at byte {bytes} of the line; the batch was cut short")
}

/// serde_json's message without its "at line 1 column N" (the line is the
/// batch's, said before), with the byte instead.
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(msg) => format!("{msg} (at byte {})", e.column()),
        None => text,
    }
}

/// The first key of a JSON object line, if the line starts as one: `{"key":`.
fn first_key(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(b"{")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    let after = rest[end + 1..].trim_ascii_start();
    if !after.starts_with(b":") {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

/// A stored batch: its sequence number, its key, and `T` (where to read it).
pub type Stored<T> = (u64, String, T);

/// One process's batches, in sequence order.
#[derive(Debug)]
pub struct Series<T> {
    pub host: String,
    pub pid: u32,
    pub batches: Vec<Stored<T>>,
}

impl<T> Series<T> {
    /// A warning for each run of batches missing before the last one stored.
    pub fn gaps(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut last = 0;
        for &(seq, _, _) in &self.batches {
            if seq != last + 1 {
                out.push(format!(
                    "process {}/{}: census batches {}..{} missing (dropped or not stored yet)",
                    self.host,
                    self.pid,
                    last + 1,
                    seq - 1
                ));
            }
            last = seq;
        }
        out
    }
}

/// The census batches among `found` (key, and where to read it), grouped by
/// process, by host then pid; other keys are left out.
pub fn series<T>(found: Vec<(String, T)>) -> Vec<Series<T>> {
    let mut by: BTreeMap<(String, u32), Vec<Stored<T>>> = BTreeMap::new();
    for (key, input) in found {
        if let Some((host, pid, seq)) = crate::keys::parse_census_key(&key) {
            by.entry((host, pid)).or_default().push((seq, key, input));
        }
    }
    by.into_iter()
        .map(|((host, pid), mut batches)| {
            batches.sort_by_key(|b| b.0);
            Series { host, pid, batches }
        })
        .collect()
}

/// Where a GC's counts stand. A point's counts are those the last finished
/// sweep left, and a lazy sweep can end hundreds of requests after its GC
/// began (as in a Rails app): the counts are those of the GC's start, so
/// they stand at the request that GC began in, the point at which that
/// request began. A GC that began before the series' first point stands at
/// the point that first sees its sweep.
#[derive(Clone, Debug, Default)]
pub struct GcPlacement {
    /// The previous point (or a batch's base, past the series' start).
    previous: Option<Stamp>,
    /// The `swept_gc` of the previous point.
    last_swept: Option<u64>,
    /// GCs `lo..=hi` began during the request that began at the stamp,
    /// until their sweep is seen.
    began: Vec<(u64, u64, Stamp)>,
}

impl GcPlacement {
    /// A batch's base: the point before its first one (the previous batch's
    /// last, even when batches between are missing). A base at no request
    /// is the series' start, not a point: GCs before it began before the
    /// census.
    pub fn base(&mut self, base: Stamp) {
        self.previous = (base.requests > 0).then_some(base);
    }

    /// A point, in order. Where the counts of a sweep it is the first to
    /// see stand (with `gc_count` that GC's own), or None when its sweep
    /// was seen before (its counts changed for another reason: a walk's
    /// memsizes, or nothing).
    pub fn point(&mut self, point: Stamp) -> Option<Stamp> {
        if let Some(previous) = self.previous.filter(|p| point.gc_count > p.gc_count) {
            self.began
                .push((previous.gc_count + 1, point.gc_count, previous));
        }
        self.previous = Some(point);
        let swept = point.swept_gc;
        if self.last_swept == Some(swept) {
            return None;
        }
        self.last_swept = Some(swept);
        let began = self
            .began
            .iter()
            .find(|&&(lo, hi, _)| lo <= swept && swept <= hi)
            .map(|b| b.2);
        self.began.retain(|&(_, hi, _)| hi > swept);
        Some(match began {
            Some(began) => Stamp {
                gc_count: swept,
                swept_gc: swept,
                ..began
            },
            None => point,
        })
    }

    /// The earliest request at which a GC still sweeping began: its counts
    /// will stand there.
    pub fn sweeping_since(&self) -> Option<u64> {
        self.began.iter().map(|b| b.2.requests).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &[u8]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        read("k", text, &mut |r| {
            out.push(format!("{r:?}"));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let header = Header {
            census: VERSION,
            host: "web-1".into(),
            pid: 42,
            seq: 3,
            points: 1,
            sites: 1,
            dropped: 0,
            capped: vec!["files".into()],
            sample: 1,
        };
        let site = Site {
            site: 7,
            file: Some("app/\"x\".rb".into()),
            line: 12,
            ty: "STRING".into(),
            class: None,
        };
        let base = Base {
            base: Stamp {
                requests: 100,
                gc_count: 11,
                swept_gc: 11,
                at: 5,
            },
            counts: Cow::Borrowed(&[(7, 120, 4800)]),
        };
        let walk = Walk {
            walk: WalkAt {
                requests: 100,
                gc_count: 11,
            },
            endpoints: vec![(7, "GET".into(), "/u".into(), 120)],
        };
        let callers = Callers {
            callers: vec![(7, "app/a.rb".into(), 3, 9)],
        };
        let point = Point {
            requests: 101,
            gc_count: 12,
            swept_gc: 12,
            major: true,
            at: 6,
            endpoints: vec![("GET".into(), "/u".into(), 1)],
            counts: Cow::Borrowed(&[(7, 121, 4840)]),
        };
        let mut w = Writer::with_capacity(0);
        w.line(&header);
        w.line(&site);
        w.line(&base);
        w.line(&walk);
        w.line(&callers);
        w.line(&point);
        let gzip = w.gzip();
        let mut records = Vec::new();
        read("k", &gzip, &mut |r| {
            records.push(format!("{r:?}"));
            Ok(())
        })
        .unwrap();
        let want: Vec<String> = [
            Record::Header(header),
            Record::Site(site),
            Record::Base(base),
            Record::Walk(walk),
            Record::Callers(callers),
            Record::Point(point),
        ]
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
        assert_eq!(records, want);
    }

    #[test]
    fn the_header_leaves_out_what_is_empty_and_reads_what_it_does_not_know() {
        let header = Header {
            census: VERSION,
            host: "h".into(),
            pid: 1,
            seq: 1,
            ..Header::default()
        };
        assert_eq!(
            serde_json::to_string(&header).unwrap(),
            r#"{"census":1,"host":"h","pid":1,"seq":1,"points":0,"sites":0}"#
        );
        let newer = br#"{"census":1,"host":"h","pid":1,"seq":1,"points":0,"sites":0,"sample":8}
{"future":[1,2,3]}
"#;
        assert_eq!(read_all(newer).unwrap().len(), 1);
    }

    #[test]
    fn a_malformed_record_names_the_key_and_the_line() {
        let site = br#"{"site":1,"file":"a.rb","line":1,"type":"STRING","class":null}"#;
        let with = |line: &[u8]| [&site[..], b"\n", line, b"\n"].concat();
        let e = read_all(&with(
            br#"{"requests":"x","gc_count":1,"swept_gc":1,"at":1}"#,
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "k: line 2: malformed point record: invalid type: string \"x\", expected u64 (at byte 15)"
        );
        let e = read_all(&with(br#"{"requests":1,"gc_count":1,"at":1}"#)).unwrap_err();
        assert!(
            e.starts_with("k: line 2: malformed point record: missing field `swept_gc`"),
            "{e}"
        );
        let e = read_all(&with(
            br#"{"base":{"requests":1,"gc_count":1,"swept_gc":1,"at":1},"counts":[[1,2]]}"#,
        ))
        .unwrap_err();
        assert!(e.starts_with("k: line 2: malformed base record: "), "{e}");
        let e = read_all(&with(br#"{"callers":[[2,"a.rb",1,1]]}"#)).unwrap_err();
        assert_eq!(e, "k: line 2: site 2 is not named in this batch");
        let e = read_all(&with(b"[1,2]")).unwrap_err();
        assert_eq!(e, "k: line 2: not a census record: not a JSON object");
        let e = read_all(&with(b"nonsense")).unwrap_err();
        assert!(e.starts_with("k: line 2: not a census record: "), "{e}");
        let e = read_all(&[&site[..], b"\n", br#"{"requests":1,"gc"#].concat()).unwrap_err();
        assert_eq!(
            e,
            "k: line 2: record cut short at byte 17 of the line; the batch was cut short"
        );
    }

    #[test]
    fn escaped_strings_are_read_and_plain_ones_borrowed() {
        let text = br#"{"site":1,"file":null,"line":0,"type":"HASH","class":null}
{"requests":1,"gc_count":1,"swept_gc":1,"at":1,"endpoints":[["GET","/a\"b",1],["GET","/c",2]]}
"#;
        let mut seen = Vec::new();
        read("k", text, &mut |r| {
            if let Record::Point(p) = r {
                for e in &p.endpoints {
                    seen.push((e.1.to_string(), matches!(e.1 .0, Cow::Borrowed(_))));
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [("/a\"b".to_string(), false), ("/c".to_string(), true)]
        );
    }

    #[test]
    fn a_gc_stands_at_the_request_it_began_in() {
        let at = |requests, gc_count, swept_gc| Stamp {
            requests,
            gc_count,
            swept_gc,
            at: requests * 10,
        };
        let mut p = GcPlacement::default();
        // The series' start: GC 3 began before the census.
        p.base(at(0, 0, 0));
        assert_eq!(p.point(at(1, 3, 3)), Some(at(1, 3, 3)));
        assert_eq!(p.point(at(2, 3, 3)), None);
        // GC 4 begins during request 2; its sweep ends during request 4.
        assert_eq!(p.point(at(3, 4, 3)), None);
        assert_eq!(p.sweeping_since(), Some(2));
        assert_eq!(p.point(at(4, 4, 3)), None);
        assert_eq!(
            p.point(at(5, 4, 4)),
            Some(Stamp {
                gc_count: 4,
                swept_gc: 4,
                ..at(2, 3, 3)
            })
        );
        assert_eq!(p.sweeping_since(), None);
        // The next batch's base is the last point: a GC after it began there.
        p.base(at(5, 4, 4));
        assert_eq!(
            p.point(at(6, 5, 5)),
            Some(Stamp {
                gc_count: 5,
                swept_gc: 5,
                ..at(5, 4, 4)
            })
        );
    }

    #[test]
    fn series_are_by_process_in_sequence_with_their_gaps() {
        let found = vec![
            ("b/2/census-000002.ndjson.gz".to_string(), ()),
            ("a/1/census-000003.ndjson.gz".to_string(), ()),
            ("a/1/census-000001.ndjson.gz".to_string(), ()),
            ("a/1/dump.jsonl.gz".to_string(), ()),
        ];
        let s = series(found);
        let names: Vec<_> = s.iter().map(|s| (s.host.as_str(), s.pid)).collect();
        assert_eq!(names, [("a", 1), ("b", 2)]);
        assert_eq!(s[0].batches.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            s[0].gaps(),
            ["process a/1: census batches 2..2 missing (dropped or not stored yet)"]
        );
        assert_eq!(
            s[1].gaps(),
            ["process b/2: census batches 1..1 missing (dropped or not stored yet)"]
        );
    }
}
