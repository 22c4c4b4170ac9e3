//! The record scanner against serde_json on random records (issue 9): random
//! key order, random whitespace, nesting in `references`, `flags` and unknown
//! fields, and strings with every escape JSON has (control characters and
//! `\u00XX` in file names, surrogate pairs, `\/`). Whatever serde_json reads
//! from a line, the scanner must read the same fields.

use objectspace_core::scan::{parse_hex, scan, unescape_lossy};
use proptest::prelude::*;
use serde_json::Value;

/// A JSON value, kept as a tree so that it can be written with random escapes
/// and whitespace.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// A number as written (`12`, `-3.5e2`, `0`).
    Num(String),
    /// A string and the seed of its escape choices.
    Str(String, u64),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// A small xorshift, so that one seed gives each character its own choice.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Write `s` as a JSON string: each character plain where JSON allows it,
/// else (or by chance) as a short escape or `\uXXXX` (upper or lower case hex,
/// surrogate pairs above U+FFFF).
fn write_str(out: &mut String, s: &str, seed: u64) {
    let mut c = Choices(seed | 1);
    out.push('"');
    for ch in s.chars() {
        let roll = c.next() % 8;
        let must = ch == '"' || ch == '\\' || (ch as u32) < 0x20;
        let short = match ch {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        if !must && roll < 5 {
            out.push(ch);
        } else if let (Some(e), true) = (short, roll < 7) {
            out.push_str(e);
        } else {
            let mut units = [0u16; 2];
            for u in ch.encode_utf16(&mut units) {
                if c.next().is_multiple_of(2) {
                    out.push_str(&format!("\\u{:04x}", u));
                } else {
                    out.push_str(&format!("\\u{:04X}", u));
                }
            }
        }
    }
    out.push('"');
}

/// JSON whitespace: usually none, sometimes a mix of the four kinds.
fn ws(out: &mut String, c: &mut Choices) {
    if c.next().is_multiple_of(4) {
        for _ in 0..(c.next() % 3 + 1) {
            out.push([' ', '\t', '\n', '\r'][(c.next() % 4) as usize]);
        }
    }
}

fn write(out: &mut String, j: &J, c: &mut Choices) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s, seed) => write_str(out, s, *seed),
        J::Arr(items) => {
            out.push('[');
            ws(out, c);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    ws(out, c);
                }
                write(out, item, c);
                ws(out, c);
            }
            out.push(']');
        }
        J::Obj(pairs) => write_pairs(out, pairs, c, false),
    }
}

/// The keys the scanner reads. dump_all writes them plain, and the scanner
/// compares them unescaped; other keys may hold escapes.
const KNOWN: [&str; 11] = [
    "address",
    "type",
    "class",
    "file",
    "name",
    "line",
    "generation",
    "memsize",
    "references",
    "flags",
    "before_baseline",
];

/// An object as dump_all writes it (`"k":v, "k":v`) or with other whitespace.
fn write_pairs(out: &mut String, pairs: &[(String, J)], c: &mut Choices, record: bool) {
    out.push('{');
    ws(out, c);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
            if !c.next().is_multiple_of(3) {
                out.push(' ');
            } else {
                ws(out, c);
            }
        }
        if record && KNOWN.contains(&k.as_str()) {
            out.push_str(&format!("\"{k}\""));
        } else {
            write_str(out, k, c.next());
        }
        ws(out, c);
        out.push(':');
        ws(out, c);
        write(out, v, c);
        ws(out, c);
    }
    out.push('}');
}

/// Text with everything a file name or value may hold: ASCII, control
/// characters, quotes and backslashes, `]`, `}`, accents and astral characters.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => prop::sample::select(vec!['/', '.', ' ', '-', '_', ':', '<', '>']),
            2 => prop::char::range('\u{0}', '\u{1f}'),
            2 => prop::sample::select(vec!['"', '\\', ']', '[', '}', '{', ',', '\u{7f}']),
            1 => prop::sample::select(vec!['é', 'ß', '€', '\u{2028}', '\u{fffd}', '😀', '𝄞']),
            1 => any::<char>(),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn string() -> impl Strategy<Value = J> {
    (text(), any::<u64>()).prop_map(|(s, seed)| J::Str(s, seed))
}

fn number() -> impl Strategy<Value = J> {
    prop_oneof![
        any::<u32>().prop_map(|n| J::Num(n.to_string())),
        (0u64..1 << 60).prop_map(|n| J::Num(n.to_string())),
        Just(J::Num("0".into())),
        (-1000i64..-1).prop_map(|n| J::Num(n.to_string())),
        (0u32..1000, 0u32..100).prop_map(|(a, b)| J::Num(format!("{a}.{b}"))),
        (1u32..9, 0u32..20).prop_map(|(a, e)| J::Num(format!("{a}e{e}"))),
        (1u32..9, 0u32..5).prop_map(|(a, e)| J::Num(format!("-{a}.5E-{e}"))),
    ]
}

/// Any JSON value, nested a few levels.
fn value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number(),
        string(),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            prop::collection::vec((text(), inner), 0..4).prop_map(|pairs| {
                // Keys of a nested object need not be unique for serde_json,
                // but keep them so to compare like with like.
                let mut seen = std::collections::HashSet::new();
                J::Obj(
                    pairs
                        .into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .collect(),
                )
            }),
        ]
    })
}

fn address() -> impl Strategy<Value = J> {
    prop_oneof![
        8 => any::<u64>().prop_map(|a| J::Str(format!("0x{a:x}"), 1)),
        1 => (1u64..1 << 40).prop_map(|a| J::Str(format!("0x{a:X}"), 1)),
        1 => "[g-z0-9]{0,6}".prop_map(|s| J::Str(s, 1)),
    ]
}

/// A value for a known field: usually the right kind, sometimes any value.
fn or_any(right: impl Strategy<Value = J>) -> impl Strategy<Value = J> {
    prop_oneof![6 => right, 1 => value()]
}

/// `references`: addresses as dump_all writes them, or anything nested.
fn references() -> impl Strategy<Value = J> {
    prop_oneof![
        3 => prop::collection::vec(address(), 0..6).prop_map(J::Arr),
        2 => prop::collection::vec(value(), 0..5).prop_map(J::Arr),
        1 => value(),
    ]
}

/// `flags`: booleans and (Ruby 4.0) numbers, or anything nested.
fn flags() -> impl Strategy<Value = J> {
    let flag = prop_oneof![any::<bool>().prop_map(J::Bool), number()];
    prop_oneof![
        3 => prop::collection::vec(("[a-z_]{1,12}", flag), 0..5).prop_map(|pairs| {
            let mut seen = std::collections::HashSet::new();
            J::Obj(pairs.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect())
        }),
        1 => value(),
    ]
}

/// A record: each known field present or not, some unknown fields, in a random order.
fn record() -> impl Strategy<Value = Vec<(String, J)>> {
    let known = (
        prop::option::of(or_any(address())),
        prop::option::of(or_any(
            prop::sample::select(vec![
                "STRING", "MATCH", "RATIONAL", "COMPLEX", "FILE", "SHAPE", "ROOT", "CLASS",
                "IMEMO", "HASH", "ARRAY", "OBJECT",
            ])
            .prop_map(|t| J::Str(t.to_string(), 1)),
        )),
        prop::option::of(or_any(address())),
        prop::option::of(or_any(string())),
        prop::option::of(or_any(string())),
        prop::option::of(or_any(number())),
        prop::option::of(or_any(number())),
        prop::option::of(or_any(number())),
        prop::option::of(references()),
        prop::option::of(flags()),
        prop::option::of(or_any(any::<bool>().prop_map(J::Bool))),
    );
    let unknown = prop::collection::vec((text(), value()), 0..5);
    (known, unknown, any::<u64>()).prop_map(|(known, unknown, seed)| {
        let (address, ty, class, file, name, line, generation, memsize, refs, flags, before) =
            known;
        let mut pairs: Vec<(String, J)> = [
            ("address", address),
            ("type", ty),
            ("class", class),
            ("file", file),
            ("name", name),
            ("line", line),
            ("generation", generation),
            ("memsize", memsize),
            ("references", refs),
            ("flags", flags),
            ("before_baseline", before),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
        for (k, v) in unknown {
            // Unknown keys never decode to a known one.
            pairs.push((format!("x{k}"), v));
        }
        // Random order: a Fisher-Yates shuffle driven by the seed.
        let mut c = Choices(seed | 1);
        for i in (1..pairs.len()).rev() {
            let j = (c.next() % (i as u64 + 1)) as usize;
            pairs.swap(i, j);
        }
        pairs
    })
}

fn line_of(pairs: &[(String, J)], seed: u64) -> String {
    let mut c = Choices(seed | 1);
    let mut out = String::new();
    ws(&mut out, &mut c);
    write_pairs(&mut out, pairs, &mut c, true);
    ws(&mut out, &mut c);
    out.trim_end_matches(['\n', '\r']).to_string()
}

/// What the scanner must read, by serde_json: a field of the wrong kind is absent.
fn expected_u64(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn expected_hex(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_str).and_then(|s| {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        (!digits.is_empty() && digits.len() <= 16 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(digits, 16).ok())
            .flatten()
    })
}

fn text_of(raw: Option<&[u8]>, escaped: bool) -> Option<String> {
    raw.map(|r| {
        let (s, lossy) = unescape_lossy(r, escaped);
        assert!(
            !lossy,
            "valid JSON read lossily: {:?}",
            String::from_utf8_lossy(r)
        );
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_scanner_reads_what_serde_json_reads(pairs in record(), seed in any::<u64>()) {
        let line = line_of(&pairs, seed);
        let v: Value = serde_json::from_str(&line).expect("the generator writes valid JSON");
        let r = scan(line.as_bytes()).map_err(|e| {
            TestCaseError::fail(format!("{e:?} on {line}"))
        })?;
        prop_assert_eq!(r.address, expected_hex(&v, "address"), "address in {}", line);
        prop_assert_eq!(r.class, expected_hex(&v, "class"), "class in {}", line);
        prop_assert_eq!(
            text_of(Some(r.ty), true).unwrap_or_default(),
            v.get("type").and_then(Value::as_str).unwrap_or("").to_string(),
            "type in {}", line
        );
        prop_assert_eq!(
            text_of(r.file, r.file_escaped),
            v.get("file").and_then(Value::as_str).map(str::to_string),
            "file in {}", line
        );
        prop_assert_eq!(
            text_of(r.name, r.name_escaped),
            v.get("name").and_then(Value::as_str).map(str::to_string),
            "name in {}", line
        );
        let clamp = |n: Option<u64>| n.map(|n| n.min(u32::MAX as u64) as u32);
        prop_assert_eq!(r.line, clamp(expected_u64(&v, "line")), "line in {}", line);
        prop_assert_eq!(r.generation, clamp(expected_u64(&v, "generation")), "generation in {}", line);
        prop_assert_eq!(r.memsize, expected_u64(&v, "memsize").unwrap_or(0), "memsize in {}", line);
        prop_assert_eq!(
            r.before_baseline,
            v.get("before_baseline") == Some(&Value::Bool(true)),
            "before_baseline in {}", line
        );
    }

    /// A record cut anywhere before its closing brace is an error, never a
    /// record read from half a line (and never a panic).
    #[test]
    fn a_record_cut_short_is_an_error(pairs in record(), seed in any::<u64>(), at in any::<prop::sample::Index>()) {
        let line = line_of(&pairs, seed);
        let Some(end) = line.rfind('}') else { unreachable!() };
        let cut = at.index(end);
        let bytes = &line.as_bytes()[..cut];
        prop_assert!(scan(bytes).is_err(), "read {:?}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn hex_parsing_agrees_with_the_standard_library() {
    for s in [
        "0x0",
        "0x7f45405e80a8",
        "0xFFFFFFFFFFFFFFFF",
        "1f",
        "0x",
        "",
        "0xg",
        "0x10000000000000000",
    ] {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let want = (!digits.is_empty() && digits.len() <= 16)
            .then(|| u64::from_str_radix(digits, 16).ok())
            .flatten();
        assert_eq!(parse_hex(s.as_bytes()), want, "{s}");
    }
}
