//! The record scanner: one `ObjectSpace.dump_all` JSON line in, the few fields
//! the analyses need out, borrowed from the line.
//!
//! This is the hot path, so it is a hand-written byte scanner rather than a
//! general JSON parser: it walks the top-level object once, reads the values of
//! the keys it knows and skips every other value (strings with `memchr`, nested
//! arrays and objects by depth). Unknown keys and record types (Ruby 3.2+
//! `SHAPE`, `shape_id`, `slot_size`, ...) are skipped, never fatal. Strings are
//! kept as raw bytes; invalid escapes and invalid UTF-8 only matter when a
//! string is turned into text (see [`unescape_lossy`]), which is lossy.

use memchr::{memchr, memchr2, memrchr};

/// The fields of one record that the analyses use. Strings are raw JSON bytes
/// (still escaped when `*_escaped` is set).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub address: Option<u64>,
    pub ty: &'a [u8],
    pub class: Option<u64>,
    pub file: Option<&'a [u8]>,
    pub file_escaped: bool,
    pub line: Option<u32>,
    pub generation: Option<u32>,
    /// `"request":N`, added by the native tracer: the process's 1-based
    /// number of the request during which the object was allocated.
    pub request: Option<u32>,
    pub memsize: u64,
    pub name: Option<&'a [u8]>,
    pub name_escaped: bool,
    /// `"before_baseline":true`: a class or module from before a retained
    /// dump's baseline, kept by the pipeline for its name only (not an object
    /// of the dump).
    pub before_baseline: bool,
    /// The body of `"references":[...]` (between the brackets), still raw:
    /// quoted addresses separated by commas.
    pub references: Option<&'a [u8]>,
    /// The category of a ROOT record (`"root":"vm"`), raw.
    pub root: Option<&'a [u8]>,
}

/// Why a line is not a record, with the byte offset where scanning stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub offset: usize,
    pub message: &'static str,
}

type Scan<T> = Result<T, ScanError>;

#[inline]
fn err<T>(offset: usize, message: &'static str) -> Scan<T> {
    Err(ScanError { offset, message })
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// `b[i]` is the byte after an opening quote. Returns (end of the string's
/// content, whether it holds a backslash); the closing quote is at the returned
/// index. Short strings (addresses, type names, keys) are scanned byte by byte,
/// which beats `memchr`'s setup; long ones (values, paths) use `memchr2`.
#[inline]
fn string_end(b: &[u8], i: usize) -> Scan<(usize, bool)> {
    // Eight bytes at a time: find the first '"' or '\\' in a word with the
    // has-zero-byte trick (only the lowest match is exact, which is the one used).
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn matches(w: u64, c: u8) -> u64 {
        let x = w ^ (ONES * c as u64);
        x.wrapping_sub(ONES) & !x & HIGH
    }
    let mut j = i;
    while j + 8 <= b.len() && j < i + 64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[j..j + 8]);
        let w = u64::from_le_bytes(word);
        let m = matches(w, b'"') | matches(w, b'\\');
        if m != 0 {
            let k = j + (m.trailing_zeros() / 8) as usize;
            if b[k] == b'"' {
                return Ok((k, false));
            }
            return string_end_slow(b, k, true);
        }
        j += 8;
    }
    string_end_slow(b, j, false)
}

#[inline(never)]
fn string_end_slow(b: &[u8], mut i: usize, mut escaped: bool) -> Scan<(usize, bool)> {
    loop {
        match memchr2(b'"', b'\\', b.get(i..).unwrap_or(&[])) {
            Some(k) => {
                let at = i + k;
                if b[at] == b'"' {
                    return Ok((at, escaped));
                }
                escaped = true;
                // A backslash escapes the next byte, whatever it is (lenient).
                i = at + 2;
                if i > b.len() {
                    return err(b.len(), "unterminated string (record cut short?)");
                }
            }
            None => return err(b.len(), "unterminated string (record cut short?)"),
        }
    }
}

/// Skip any JSON value starting at `i`; returns the index after it.
fn skip_value(b: &[u8], i: usize) -> Scan<usize> {
    match b.get(i) {
        None => err(
            i,
            "expected a value, found the end of the line (record cut short?)",
        ),
        Some(b'"') => Ok(string_end(b, i + 1)?.0 + 1),
        Some(b'[') | Some(b'{') => skip_nested(b, i),
        Some(c) if c.is_ascii_digit() || *c == b'-' => {
            let mut j = i + 1;
            while j < b.len() && matches!(b[j], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                j += 1;
            }
            Ok(j)
        }
        Some(b't') if b[i..].starts_with(b"true") => Ok(i + 4),
        Some(b'f') if b[i..].starts_with(b"false") => Ok(i + 5),
        Some(b'n') if b[i..].starts_with(b"null") => Ok(i + 4),
        Some(_) => err(i, "malformed JSON: expected a value"),
    }
}

/// Skip an array or object starting at `i` (which holds `[` or `{`). Only
/// brackets outside strings count; the structure inside is not validated.
fn skip_nested(b: &[u8], i: usize) -> Scan<usize> {
    let mut stack: [u8; 32] = [0; 32];
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' => {
                j = string_end(b, j + 1)?.0 + 1;
                continue;
            }
            c @ (b'[' | b'{') => {
                if depth == stack.len() {
                    return err(j, "malformed JSON: nested too deeply");
                }
                stack[depth] = if c == b'[' { b']' } else { b'}' };
                depth += 1;
            }
            c @ (b']' | b'}') => {
                if depth == 0 || stack[depth - 1] != c {
                    return err(j, "malformed JSON: mismatched bracket");
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    err(b.len(), "unterminated array or object (record cut short?)")
}

/// True when `seg`, the bytes of an array from after its `[` to its first
/// `]`, shows that `]` ends the array: no nested array or escape before it
/// (an object before it ends in `}`, not in a string),
/// and it follows a whole string of address characters (`"0x7f..."`) that
/// itself follows the `[` or a separator, so it is not inside a string.
/// Anything else (other JSON writers) is skipped the slow way.
#[inline]
fn closes_addresses(seg: &[u8]) -> bool {
    if seg.iter().all(|c| c.is_ascii_whitespace()) {
        return true;
    }
    let Some((&b'"', body)) = seg.split_last() else {
        return false;
    };
    let Some(open) = memrchr(b'"', body) else {
        return false;
    };
    body[open + 1..].iter().all(u8::is_ascii_alphanumeric)
        && (open == 0 || matches!(body[open - 1], b' ' | b',' | b'\t' | b'\n' | b'\r'))
        && memchr2(b'[', b'\\', &body[..open]).is_none()
}

/// Skip the rest of dump_all's `flags` object (`"old":true, "age":3`), from
/// just after its `{`: the index after its `}`, or `None` when a value is not
/// a boolean or a plain number (the caller then skips it as any value).
#[inline]
fn skip_flags(b: &[u8], mut i: usize) -> Scan<Option<usize>> {
    if b.get(i) == Some(&b'}') {
        return Ok(Some(i + 1));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Ok(None);
        }
        i = string_end(b, i + 1)?.0 + 1;
        if b.get(i) != Some(&b':') {
            return Ok(None);
        }
        i += 1;
        match b.get(i) {
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(c) if c.is_ascii_digit() => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            _ => return Ok(None),
        }
        match b.get(i) {
            Some(b',') => {
                i += 1;
                if b.get(i) == Some(&b' ') {
                    i += 1;
                }
            }
            Some(b'}') => return Ok(Some(i + 1)),
            _ => return Ok(None),
        }
    }
}

/// Read a string value at `i` (which must hold `"`): (content, escaped, index after).
#[inline]
fn read_string(b: &[u8], i: usize) -> Scan<Option<(&[u8], bool, usize)>> {
    match b.get(i) {
        Some(b'"') => {
            let (end, escaped) = string_end(b, i + 1)?;
            Ok(Some((&b[i + 1..end], escaped, end + 1)))
        }
        _ => Ok(None),
    }
}

/// Read an unsigned integer at `i`; anything else (null, negative, float) is
/// skipped and reads as `None`.
#[inline]
fn read_uint(b: &[u8], i: usize) -> Scan<(Option<u64>, usize)> {
    let mut j = i;
    let mut v: u64 = 0;
    while j < b.len() && b[j].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add((b[j] - b'0') as u64);
        j += 1;
    }
    if j > i && (j == b.len() || !matches!(b[j], b'.' | b'e' | b'E')) && j - i <= 19 {
        return Ok((Some(v), j));
    }
    Ok((None, skip_value(b, i)?))
}

// The primitives the other hand-written readers share (the pipeline's
// counters, annotate, redact): one scanner of JSON strings and numbers.

/// `b` starts right after an opening quote: the length of the string's
/// content (escapes skipped), or `None` when it is not closed in `b`.
#[inline]
pub fn quoted_len(b: &[u8]) -> Option<usize> {
    string_end(b, 0).ok().map(|(end, _)| end)
}

/// The unsigned integer that `b` starts with; `None` for anything else
/// (no digits, a float, a negative number, more than 19 digits).
#[inline]
pub fn leading_u64(b: &[u8]) -> Option<u64> {
    read_uint(b, 0).ok().and_then(|(v, _)| v)
}

/// Hex digit values; 0xff for bytes that are not hex digits.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parse `0x7f...` into a number; `None` for anything else.
#[inline]
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    let digits = s.strip_prefix(b"0x").unwrap_or(s);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    let mut bad = 0u8;
    for &c in digits {
        let d = HEX[c as usize];
        bad |= d;
        v = (v << 4) | (d & 0xf) as u64;
    }
    // Any invalid digit (0xff) sets the high bits of `bad`.
    (bad & 0xf0 == 0).then_some(v)
}

/// Equality of two short byte strings of the same length (keys: at most 16
/// bytes) without a `memcmp` call.
#[inline(always)]
fn eq_short(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.len() > 16 {
        return a == b;
    }
    let mut x = [0u8; 16];
    let mut y = [0u8; 16];
    x[..a.len()].copy_from_slice(a);
    y[..b.len()].copy_from_slice(b);
    u128::from_le_bytes(x) == u128::from_le_bytes(y)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Address,
    Type,
    Class,
    File,
    Name,
    Line,
    Generation,
    Memsize,
    References,
    Flags,
    BeforeBaseline,
    Request,
    Root,
    Other,
}

/// Classify a key with one length/first-byte dispatch and one fixed-size
/// comparison (a chain of slice comparisons costs a `bcmp` call per arm).
#[inline]
fn key_of(key: &[u8]) -> Key {
    let (k, want): (Key, &[u8]) = match (key.len(), key.first()) {
        (7, Some(b'a')) => (Key::Address, b"address"),
        (4, Some(b't')) => (Key::Type, b"type"),
        (5, Some(b'c')) => (Key::Class, b"class"),
        (4, Some(b'f')) => (Key::File, b"file"),
        (4, Some(b'n')) => (Key::Name, b"name"),
        (4, Some(b'l')) => (Key::Line, b"line"),
        (10, Some(b'g')) => (Key::Generation, b"generation"),
        (7, Some(b'm')) => (Key::Memsize, b"memsize"),
        (10, Some(b'r')) => (Key::References, b"references"),
        (5, Some(b'f')) => (Key::Flags, b"flags"),
        (15, Some(b'b')) => (Key::BeforeBaseline, b"before_baseline"),
        (7, Some(b'r')) => (Key::Request, b"request"),
        (4, Some(b'r')) => (Key::Root, b"root"),
        _ => return Key::Other,
    };
    if eq_short(key, want) {
        k
    } else {
        Key::Other
    }
}

/// Scan one line (without its newline). Blank lines are the caller's business.
pub fn scan(line: &[u8]) -> Scan<Record<'_>> {
    let b = line;
    let mut rec = Record::default();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return err(i, "malformed JSON: a record must start with '{'");
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return if skip_ws(b, i + 1) == b.len() {
            Ok(rec)
        } else {
            err(i + 1, "malformed JSON: trailing bytes after the record")
        };
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return err(i, "malformed JSON: expected a key");
        }
        let key_start = i + 1;
        let (key_end, _) = string_end(b, key_start)?;
        let key = &b[key_start..key_end];
        i = key_end + 1;
        // dump_all writes `"key":value`; accept whitespace around the colon too.
        if b.get(i) != Some(&b':') {
            i = skip_ws(b, i);
            if b.get(i) != Some(&b':') {
                return err(i, "malformed JSON: expected ':' after a key");
            }
        }
        i = skip_ws(b, i + 1);
        match key_of(key) {
            Key::Address | Key::Class => match read_string(b, i)? {
                Some((s, escaped, next)) => {
                    // dump_all never escapes an address; JSON allows it.
                    let v = if escaped {
                        parse_hex(unescape_lossy(s, true).0.as_bytes())
                    } else {
                        parse_hex(s)
                    };
                    if key.len() == 7 {
                        rec.address = v;
                    } else {
                        rec.class = v;
                    }
                    i = next;
                }
                None => i = skip_value(b, i)?,
            },
            Key::Type => match read_string(b, i)? {
                Some((s, _, next)) => {
                    rec.ty = s;
                    i = next;
                }
                None => i = skip_value(b, i)?,
            },
            Key::File => match read_string(b, i)? {
                Some((s, escaped, next)) => {
                    rec.file = Some(s);
                    rec.file_escaped = escaped;
                    i = next;
                }
                None => i = skip_value(b, i)?,
            },
            Key::Name => match read_string(b, i)? {
                Some((s, escaped, next)) => {
                    rec.name = Some(s);
                    rec.name_escaped = escaped;
                    i = next;
                }
                None => i = skip_value(b, i)?,
            },
            Key::Line => {
                let (v, next) = read_uint(b, i)?;
                rec.line = v.map(|v| v.min(u32::MAX as u64) as u32);
                i = next;
            }
            Key::Generation => {
                let (v, next) = read_uint(b, i)?;
                rec.generation = v.map(|v| v.min(u32::MAX as u64) as u32);
                i = next;
            }
            Key::Memsize => {
                let (v, next) = read_uint(b, i)?;
                rec.memsize = v.unwrap_or(0);
                i = next;
            }
            Key::References if b.get(i) == Some(&b'[') => {
                // dump_all writes addresses only, so the first ']' ends the
                // array, unless something before it could hide one (then the
                // record is skipped exactly, and its references not kept).
                match memchr(b']', &b[i + 1..]) {
                    Some(k) if closes_addresses(&b[i + 1..i + 1 + k]) => {
                        rec.references = Some(&b[i + 1..i + 1 + k]);
                        i += k + 2
                    }
                    _ => i = skip_value(b, i)?,
                }
            }
            Key::Flags if b.get(i) == Some(&b'{') => {
                // {"wb_protected":true, "old":true, "age":3, ...}: no nesting.
                i = match skip_flags(b, i + 1)? {
                    Some(next) => next,
                    None => skip_value(b, i)?,
                };
            }
            Key::Request => {
                let (v, next) = read_uint(b, i)?;
                rec.request = v.map(|v| v.min(u32::MAX as u64) as u32);
                i = next;
            }
            Key::Root => match read_string(b, i)? {
                Some((s, _, next)) => {
                    rec.root = Some(s);
                    i = next;
                }
                None => i = skip_value(b, i)?,
            },
            Key::BeforeBaseline => {
                rec.before_baseline = b[i..].starts_with(b"true");
                i = skip_value(b, i)?;
            }
            _ => i = skip_value(b, i)?,
        }
        // dump_all writes `, ` between pairs.
        match b.get(i) {
            Some(b',') => {
                i += 1;
                if b.get(i) == Some(&b' ') {
                    i += 1;
                }
                if b.get(i) != Some(&b'"') {
                    i = skip_ws(b, i);
                }
            }
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => {
                i = skip_ws(b, i);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    None => return err(i, "record cut short: no closing '}'"),
                    Some(_) => return err(i, "malformed JSON: expected ',' or '}'"),
                }
            }
        }
    }
    let rest = skip_ws(b, i);
    if rest != b.len() {
        return err(rest, "malformed JSON: trailing bytes after the record");
    }
    Ok(rec)
}

/// Turn a raw JSON string body into text, leniently: valid escapes are decoded,
/// invalid ones are kept as written, invalid UTF-8 becomes U+FFFD. Returns the
/// text and whether anything had to be replaced.
pub fn unescape_lossy(raw: &[u8], escaped: bool) -> (String, bool) {
    if !escaped {
        return match std::str::from_utf8(raw) {
            Ok(s) => (s.to_string(), false),
            Err(_) => (String::from_utf8_lossy(raw).into_owned(), true),
        };
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut lossy = false;
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' || i + 1 >= raw.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = raw[i + 1];
        i += 2;
        match e {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let hex = raw.get(i..i + 4).and_then(parse_hex).map(|v| v as u32);
                match hex {
                    Some(mut cp) => {
                        i += 4;
                        if (0xD800..0xDC00).contains(&cp) && raw.get(i..i + 2) == Some(b"\\u") {
                            if let Some(lo) = raw.get(i + 2..i + 6).and_then(parse_hex) {
                                let lo = lo as u32;
                                if (0xDC00..0xE000).contains(&lo) {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                    i += 6;
                                }
                            }
                        }
                        match char::from_u32(cp) {
                            Some(ch) => {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            None => {
                                lossy = true;
                                out.extend_from_slice("\u{FFFD}".as_bytes());
                            }
                        }
                    }
                    None => {
                        lossy = true;
                        out.extend_from_slice(b"\\u");
                    }
                }
            }
            other => {
                // Some Ruby versions wrote escapes JSON does not have; keep them.
                lossy = true;
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => (s, lossy),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_traced_string() {
        let line = br#"{"address":"0x7f45405e80a8", "type":"STRING", "class":"0x7f453fe06420", "frozen":true, "bytesize":24, "value":"a \"quoted\" } value", "encoding":"US-ASCII", "file":"/app/x.rb", "line":12, "method":"call", "generation":45, "memsize":88, "flags":{"wb_protected":true, "old":true}}"#;
        let r = scan(line).unwrap();
        assert_eq!(r.address, Some(0x7f45405e80a8));
        assert_eq!(r.ty, b"STRING");
        assert_eq!(r.class, Some(0x7f453fe06420));
        assert_eq!(r.file, Some(&b"/app/x.rb"[..]));
        assert_eq!(r.line, Some(12));
        assert_eq!(r.generation, Some(45));
        assert_eq!(r.memsize, 88);
    }

    #[test]
    fn reads_roots_and_classes() {
        let r = scan(br#"{"type":"ROOT", "root":"vm", "references":["0x1", "0x2"]}"#).unwrap();
        assert_eq!(r.ty, b"ROOT");
        assert_eq!(r.address, None);
        assert_eq!(r.root, Some(&b"vm"[..]));
        assert_eq!(r.references, Some(&br#""0x1", "0x2""#[..]));
        let r = scan(br#"{"address":"0x10", "type":"CLASS", "class":"0x8", "name":"Foo::Bar", "references":[], "memsize":544}"#).unwrap();
        assert!(!r.before_baseline);
        let c =
            scan(br#"{"address":"0x10", "type":"CLASS", "name":"Foo", "before_baseline":true}"#)
                .unwrap();
        assert!(c.before_baseline);
        let s = scan(br#"{"address":"0x20", "type":"STRING", "file":"a.rb", "line":3, "generation":7, "request":42}"#)
            .unwrap();
        assert_eq!((s.generation, s.request), (Some(7), Some(42)));
        assert_eq!(c.name, Some(&b"Foo"[..]));
        assert_eq!(r.name, Some(&b"Foo::Bar"[..]));
        assert_eq!(r.memsize, 544);
    }

    #[test]
    fn unknown_fields_and_nesting_are_skipped() {
        let r = scan(br#"{"address":"0x10", "type":"SHAPE", "shape_id":3, "x":[{"a":[1,2,{"b":"]}"}]}], "y":null, "z":-1.5e3, "memsize":8}"#).unwrap();
        assert_eq!(r.ty, b"SHAPE");
        assert_eq!(r.memsize, 8);
    }

    /// Cases the differential test against serde_json found: `references` and
    /// `flags` that are not dump_all's flat lists, and escaped addresses.
    #[test]
    fn nesting_and_escapes_that_dump_all_never_writes_still_read() {
        for line in [
            &br#"{"references":[[]], "memsize":7}"#[..],
            br#"{"references":[["0x1"], "0x2"], "memsize":7}"#,
            br#"{"references":[["x", "a"]], "memsize":7}"#,
            br#"{"references":["x", "]"], "memsize":7}"#,
            br#"{"references":["a\"]", "b"], "memsize":7}"#,
            br#"{"references":[{"k":"]"}], "memsize":7}"#,
            br#"{"flags":{"a":"}"}, "memsize":7}"#,
            br#"{"flags":{"a":{"b":1}}, "memsize":7}"#,
            br#"{"flags":{"old":true, "age":3, "object_id":8}, "memsize":7}"#,
            br#"{"references":[ ], "flags":{}, "memsize":7}"#,
        ] {
            let r =
                scan(line).unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(line)));
            assert_eq!(r.memsize, 7, "{}", String::from_utf8_lossy(line));
        }
        let r = scan(br#"{"address":"0x1\u0030", "class":"\u00300x8"}"#).unwrap();
        assert_eq!((r.address, r.class), (Some(0x10), None));
    }

    #[test]
    fn errors_carry_an_offset() {
        for bad in [
            &b"{\"address\":\"0x1\", \"type\":\"STR"[..],
            b"{\"a\":1",
            b"garbage",
            b"{\"a\":}",
            b"{\"a\":[1,2}",
            b"{} x",
            b"\x00\xff{",
        ] {
            assert!(scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lossy_unescape() {
        assert_eq!(
            unescape_lossy(br#"a\"b\u00e9\ud83d\ude00"#, true),
            ("a\"bé😀".to_string(), false)
        );
        assert_eq!(
            unescape_lossy(br#"bad\x"#, true),
            ("bad\\x".to_string(), true)
        );
        assert!(unescape_lossy(b"\xff/x.rb", false).1);
    }
}
