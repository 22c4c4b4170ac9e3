//! Dump keys: `<host>/<pid>/<seq>-<unix-ms>-<METHOD>-<path-slug>-<salt>.jsonl.gz`.
//! Census batches, beside them: `<host>/<pid>/census-<seq>.ndjson.gz` (see
//! [`census_key`]): gzipped JSON lines too, under a suffix that tools and
//! scripts looking for `*.jsonl.gz` dumps do not pick up.
//!
//! Many processes and hosts can share one store, and a process's dumps sort by
//! key in the order they were taken. Every part is sanitised to `[A-Za-z0-9_-]`
//! (the host also keeps `.`, never as `..` or first), so no request path can
//! climb out of the store's prefix, add a folder, or make a key longer than
//! `MAX_KEY_LEN` bytes.

/// Suffix of a dump object.
pub const DUMP_SUFFIX: &str = ".jsonl.gz";
/// Suffix of the metadata record stored beside each dump.
pub const META_SUFFIX: &str = ".meta.json";
/// Longest path slug kept in a key.
pub const MAX_SLUG_LEN: usize = 64;
/// Longest host name kept in a key.
pub const MAX_HOST_LEN: usize = 64;
/// No key is longer than this.
pub const MAX_KEY_LEN: usize =
    MAX_HOST_LEN + 1 + 10 + 1 + 20 + 1 + 20 + 1 + 16 + 1 + MAX_SLUG_LEN + 1 + 16 + 16;

/// The parts of one dump's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpKey {
    pub host: String,
    pub pid: u32,
    pub seq: u64,
    pub unix_ms: u64,
    pub method: String,
    pub slug: String,
    pub salt: String,
}

/// Keep `[A-Za-z0-9]` and `extra`; map every other run of bytes to one `_`;
/// trim `_` at both ends; cut to `max` bytes; `fallback` if nothing is left.
fn sanitise(input: &str, extra: &[u8], max: usize, fallback: &str) -> String {
    let mut out = String::with_capacity(input.len().min(max));
    let mut pending_sep = false;
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || extra.contains(&b) {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.push(b as char);
        } else {
            pending_sep = true;
        }
        if out.len() >= max {
            break;
        }
    }
    out.truncate(max);
    let trimmed = out.trim_matches(|c| c == '_' || c == '-' || c == '.');
    if trimmed.is_empty() {
        fallback.to_string()
    } else {
        trimmed.to_string()
    }
}

/// The path slug of a request path: `/users/42/edit?x=1` -> `users_42_edit`.
/// The query string is dropped (it often carries tokens).
pub fn path_slug(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    sanitise(path, b"", MAX_SLUG_LEN, "root")
}

/// A host name safe for a key segment (dots kept, never `.` or `..`).
pub fn host_segment(host: &str) -> String {
    let host = sanitise(host, b".-", MAX_HOST_LEN, "localhost");
    // `sanitise` trims leading/trailing dots, so "." and ".." cannot survive;
    // an inner ".." is harmless in a segment but collapse it anyway.
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        if c == '.' && out.ends_with('.') {
            continue;
        }
        out.push(c);
    }
    out
}

/// An HTTP method for a key: uppercase letters only, at most 16.
pub fn method_segment(method: &str) -> String {
    let m: String = method
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .take(16)
        .collect::<String>()
        .to_ascii_uppercase();
    if m.is_empty() {
        "UNKNOWN".to_string()
    } else {
        m
    }
}

impl DumpKey {
    /// Build the key of one dump from raw request data; every part is sanitised.
    pub fn new(
        host: &str,
        pid: u32,
        seq: u64,
        unix_ms: u64,
        method: &str,
        path: &str,
        salt: u32,
    ) -> Self {
        DumpKey {
            host: host_segment(host),
            pid,
            seq,
            unix_ms,
            method: method_segment(method),
            slug: path_slug(path),
            salt: format!("{salt:08x}"),
        }
    }

    fn stem(&self) -> String {
        format!(
            "{}/{}/{:06}-{}-{}-{}-{}",
            self.host, self.pid, self.seq, self.unix_ms, self.method, self.slug, self.salt
        )
    }

    /// The dump's key, relative to the store's prefix.
    pub fn dump_key(&self) -> String {
        format!("{}{DUMP_SUFFIX}", self.stem())
    }

    /// The key of the metadata record beside the dump.
    pub fn meta_key(&self) -> String {
        format!("{}{META_SUFFIX}", self.stem())
    }

    /// Parse a dump or metadata key (with or without leading folders before the
    /// host, e.g. a store prefix). `None` for anything that is not one of ours.
    pub fn parse(key: &str) -> Option<DumpKey> {
        let stem = key
            .strip_suffix(DUMP_SUFFIX)
            .or_else(|| key.strip_suffix(META_SUFFIX))?;
        let mut segments = stem.rsplit('/');
        let name = segments.next()?;
        let pid = segments.next()?.parse().ok()?;
        let host = segments.next()?.to_string();
        let mut fields = name.splitn(4, '-');
        let seq = fields.next()?.parse().ok()?;
        let unix_ms = fields.next()?.parse().ok()?;
        let method = fields.next()?.to_string();
        let rest = fields.next()?;
        let (slug, salt) = rest.rsplit_once('-')?;
        if host.is_empty() || method.is_empty() || slug.is_empty() || salt.is_empty() {
            return None;
        }
        Some(DumpKey {
            host,
            pid,
            seq,
            unix_ms,
            method,
            slug: slug.to_string(),
            salt: salt.to_string(),
        })
    }
}

/// File names of census batches start with this.
pub const CENSUS_PREFIX: &str = "census-";
/// Suffix of a census batch.
pub const CENSUS_SUFFIX: &str = ".ndjson.gz";

/// The key of a process's `seq`th census batch: `<host>/<pid>/census-<seq>.ndjson.gz`.
pub fn census_key(host: &str, pid: u32, seq: u64) -> String {
    format!(
        "{}/{pid}/{CENSUS_PREFIX}{seq:06}{CENSUS_SUFFIX}",
        host_segment(host)
    )
}

/// `(host, pid, seq)` of a census key (leading folders allowed), or None.
pub fn parse_census_key(key: &str) -> Option<(String, u32, u64)> {
    let stem = key.strip_suffix(CENSUS_SUFFIX)?;
    let mut segments = stem.rsplit('/');
    let seq = segments.next()?.strip_prefix(CENSUS_PREFIX)?.parse().ok()?;
    let pid = segments.next()?.parse().ok()?;
    let host = segments.next()?;
    (!host.is_empty()).then(|| (host.to_string(), pid, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = DumpKey::new(
            "web-1.example.com",
            4242,
            7,
            1_700_000_000_123,
            "get",
            "/users/42/edit?token=s3cret",
            0xdead_beef,
        );
        assert_eq!(
            key.dump_key(),
            "web-1.example.com/4242/000007-1700000000123-GET-users_42_edit-deadbeef.jsonl.gz"
        );
        assert_eq!(
            key.meta_key(),
            "web-1.example.com/4242/000007-1700000000123-GET-users_42_edit-deadbeef.meta.json"
        );
        assert_eq!(DumpKey::parse(&key.dump_key()), Some(key.clone()));
        assert_eq!(
            DumpKey::parse(&format!("some/prefix/{}", key.meta_key())),
            Some(key)
        );
    }

    #[test]
    fn query_strings_never_reach_the_key() {
        assert!(!DumpKey::new("h", 1, 1, 1, "GET", "/x?token=s3cret", 0)
            .dump_key()
            .contains("s3cret"));
    }

    #[test]
    fn hostile_paths_stay_one_segment() {
        let long = "/a".repeat(10_000);
        let nul = "/x\0/../y\r\n";
        for path in [
            "/../../x",
            "..",
            "/./.",
            nul,
            long.as_str(),
            "/ünïcødé/☃",
            "//",
            "",
            "/%2e%2e/%2f",
        ] {
            let key = DumpKey::new("h", 1, 1, 1, "GET", path, 0);
            let dump = key.dump_key();
            assert!(dump.len() <= MAX_KEY_LEN, "{dump}");
            assert_eq!(dump.matches('/').count(), 2, "{dump}");
            assert!(!dump.contains(".."), "{dump}");
            assert!(dump.bytes().all(|b| b.is_ascii_graphic()), "{dump}");
            assert_eq!(DumpKey::parse(&dump).map(|k| k.slug), Some(key.slug));
        }
    }

    #[test]
    fn hostile_hosts_and_methods_are_tamed() {
        let key = DumpKey::new("../..", 1, 1, 1, "G/E\0T", "/", 0);
        assert_eq!(key.host, "localhost");
        assert_eq!(key.method, "GET");
        assert_eq!(key.slug, "root");
        let key = DumpKey::new("a..b/c", 1, 1, 1, "", "/", 0);
        assert_eq!(key.host, "a.b_c");
        assert_eq!(key.method, "UNKNOWN");
    }

    #[test]
    fn census_keys_round_trip_and_are_not_dump_keys() {
        let key = census_key("web/1", 42, 3);
        assert_eq!(key, "web_1/42/census-000003.ndjson.gz");
        assert_eq!(parse_census_key(&key), Some(("web_1".into(), 42, 3)));
        assert_eq!(
            parse_census_key(&format!("pre/fix/{key}")),
            Some(("web_1".into(), 42, 3))
        );
        assert_eq!(DumpKey::parse(&key), None);
        assert_eq!(parse_census_key("h/1/000001-1-GET-x-00.jsonl.gz"), None);
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "dump.json",
            "h/1/x.jsonl.gz",
            "h/notpid/000001-1-GET-x-00.jsonl.gz",
            "000001-1-GET-x-00.jsonl.gz",
        ] {
            assert_eq!(DumpKey::parse(name), None, "{name}");
        }
    }
}
