//! The interner: file names and sites (file, line, type), each stored once
//! and named by an id, within the caps [`MAX_FILES`] and [`MAX_SITES`].
//!
//! File names are interned by the address of the path string Ruby hands over
//! (the iseq's path, which lives as long as the code), checked against the
//! bytes so that a reused address cannot rename a file. Past a cap, new files
//! and sites share the name [`OVERFLOW_FILE`] (eval with a unique file name per
//! call cannot grow the table without limit).

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use super::model::{SiteInfo, NO_FILE};

/// Most allocation sites (file, line, type) the census keeps apart. Past it,
/// new sites are counted under one site per type, in the file
/// [`OVERFLOW_FILE`], line 0.
pub const MAX_SITES: usize = 200_000;
/// Most distinct file names kept. Past it, new files (typically `eval` code
/// given a unique name per call) are all named [`OVERFLOW_FILE`].
pub const MAX_FILES: usize = 50_000;
/// The file name given to sites and files past a cap.
pub const OVERFLOW_FILE: &str = "(rack-objectspace: site table cap reached)";

/// Entries of the address-of-path cache before it is emptied (it is only a cache).
const MAX_PATH_KEYS: usize = 4 * MAX_FILES;

/// Entries of the site cache, as a power of 2 (16 KiB).
const SITE_CACHE_BITS: u32 = 9;

/// A site cache entry (key 0, no path string's address: empty).
#[derive(Clone, Copy, Default)]
struct CachedSite {
    key: usize,
    /// `generation << 8 | type`.
    tag: u64,
    line: u32,
    site: u32,
}

/// (path key, line, type) -> site, direct-mapped, for one GC generation.
struct SiteCache(Box<[CachedSite; 1 << SITE_CACHE_BITS]>);

impl Default for SiteCache {
    fn default() -> Self {
        Self(Box::new([CachedSite::default(); 1 << SITE_CACHE_BITS]))
    }
}

/// Interned file names. Id 1 is [`NO_FILE`]; a name's id is its index + 2.
#[derive(Default)]
pub(super) struct FileNames {
    /// Raw bytes (to check reuse) and JSON-escaped text.
    raw: Vec<Box<[u8]>>,
    json: Vec<Box<str>>,
    by_bytes: HashMap<Box<[u8]>, u32>,
    /// Path string address -> id, checked against the bytes.
    by_key: FxHashMap<usize, u32>,
    /// The last path looked up: (key, id), checked against the bytes like `by_key`.
    last: Option<(usize, u32)>,
    /// The id of [`OVERFLOW_FILE`] (0: not interned yet).
    overflow_id: u32,
    /// Whether a file past [`MAX_FILES`] was given the overflow name.
    pub(super) cap_reached: bool,
}

impl FileNames {
    /// The id of the path string at `key` with `bytes`; past the cap, the
    /// overflow name's.
    #[inline]
    fn id(&mut self, key: usize, bytes: &[u8]) -> u32 {
        // Consecutive allocations mostly come from one file.
        if let Some((k, id)) = self.last {
            if k == key && *self.raw[(id - 2) as usize] == *bytes {
                return id;
            }
        }
        if let Some(&id) = self.by_key.get(&key) {
            if *self.raw[(id - 2) as usize] == *bytes {
                self.last = Some((key, id));
                return id;
            }
        }
        let id = match self.by_bytes.get(bytes) {
            Some(&id) => id,
            None if self.raw.len() >= MAX_FILES => {
                self.cap_reached = true;
                self.overflow()
            }
            None => self.intern(bytes),
        };
        if self.by_key.len() >= MAX_PATH_KEYS {
            // Path strings come and go (eval): the cache is rebuilt as needed.
            self.by_key.clear();
        }
        self.by_key.insert(key, id);
        self.last = Some((key, id));
        id
    }

    /// The id of the file named `bytes`, interned if new and under the cap.
    pub(super) fn id_under_cap(&mut self, bytes: &[u8]) -> Option<u32> {
        match self.by_bytes.get(bytes) {
            Some(&id) => Some(id),
            None if self.raw.len() < MAX_FILES => Some(self.intern(bytes)),
            None => None,
        }
    }

    /// The id of the file named `bytes`, if it was interned.
    pub(super) fn find(&self, bytes: &[u8]) -> Option<u32> {
        self.by_bytes.get(bytes).copied()
    }

    /// The id of [`OVERFLOW_FILE`], interned if new.
    fn overflow(&mut self) -> u32 {
        if self.overflow_id == 0 {
            self.overflow_id = self.intern(OVERFLOW_FILE.as_bytes());
        }
        self.overflow_id
    }

    fn intern(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.by_bytes.get(bytes) {
            return id;
        }
        let id = self.raw.len() as u32 + 2;
        self.raw.push(bytes.into());
        self.json.push(json_escape(bytes).into_boxed_str());
        self.by_bytes.insert(bytes.into(), id);
        id
    }

    /// A file's name as Ruby gave it.
    pub(super) fn raw(&self, id: u32) -> &[u8] {
        &self.raw[(id - 2) as usize]
    }

    /// A file's name escaped for the inside of a JSON string.
    pub(super) fn json(&self, id: u32) -> &str {
        &self.json[(id - 2) as usize]
    }

    /// A file's name as text (invalid UTF-8 replaced, as in `json`).
    pub(super) fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.raw(id)).into_owned()
    }

    /// Whether `id` names a library's file (a gem's or Ruby's; see
    /// [`crate::callers::is_library`]), not the app's or the overflow name.
    pub(super) fn is_library(&self, id: u32) -> bool {
        id > NO_FILE && id != self.overflow_id && crate::callers::is_library(self.raw(id))
    }

    /// Distinct files seen.
    pub(super) fn len(&self) -> usize {
        self.raw.len()
    }

    /// Bytes of the file names and their cache (estimated).
    fn bytes(&self) -> usize {
        let names: usize = self.raw.iter().map(|p| 2 * p.len() + 64).sum();
        self.by_key.capacity() * 16 + names
    }
}

/// The sites, each with its census counters, and the file names they name.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) files: FileNames,
    /// Site id - 1 -> the site.
    pub(super) sites: Vec<SiteInfo>,
    by_site: FxHashMap<u64, u32>,
    last_site: Option<(u64, u32)>,
    /// (path key, line, type) -> site, for one GC generation.
    site_cache: SiteCache,
    /// Whether a site past [`MAX_SITES`] was counted under an overflow site.
    pub(super) cap_reached: bool,
}

impl Interner {
    /// The site of (path string, line, type), from a direct-mapped cache
    /// that lives one GC generation: a hit skips the path's bytes and the
    /// site map. Within a generation, a path key names one string.
    #[inline]
    pub(super) fn cached_site<'a>(
        &mut self,
        key: usize,
        bytes: impl FnOnce() -> &'a [u8],
        line: u32,
        ty: u8,
        generation: u64,
    ) -> u32 {
        let hash = (key as u64 ^ (u64::from(line) << 32) ^ u64::from(ty))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - SITE_CACHE_BITS);
        let tag = generation << 8 | u64::from(ty);
        let c = self.site_cache.0[hash as usize];
        if c.key == key && c.tag == tag && c.line == line && key != 0 {
            return c.site;
        }
        let path = self.files.id(key, bytes());
        let site = self.site_id(path, line, ty);
        self.site_cache.0[hash as usize] = CachedSite {
            key,
            tag,
            line,
            site,
        };
        site
    }

    /// The site of (file id, line, type), made if new; past [`MAX_SITES`],
    /// the overflow site of the type.
    #[inline]
    pub(super) fn site_id(&mut self, path: u32, line: u32, ty: u8) -> u32 {
        let key = (u64::from(path) << 40) | (u64::from(ty) << 32) | u64::from(line);
        if let Some((k, id)) = self.last_site {
            if k == key {
                return id;
            }
        }
        let id = match self.by_site.get(&key) {
            Some(&id) => id,
            None if self.sites.len() >= MAX_SITES && path != self.files.overflow_id => {
                self.cap_reached = true;
                let overflow = self.files.overflow();
                return self.site_id(overflow, 0, ty);
            }
            None => {
                self.sites.push(SiteInfo {
                    path,
                    line,
                    ty,
                    ..SiteInfo::default()
                });
                let id = self.sites.len() as u32;
                self.by_site.insert(key, id);
                id
            }
        };
        self.last_site = Some((key, id));
        id
    }

    /// The site `id` (>= 1), if there is one.
    pub(super) fn site(&self, id: u32) -> Option<&SiteInfo> {
        self.sites.get((id as usize).wrapping_sub(1))
    }

    /// Bytes of the site and file tables (estimated from their lengths).
    pub(super) fn bytes(&self) -> usize {
        self.sites.capacity() * std::mem::size_of::<SiteInfo>()
            + self.by_site.capacity() * 16
            + self.files.bytes()
    }
}

/// `bytes` as the inside of a JSON string (invalid UTF-8 replaced).
fn json_escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let quoted = serde_json::to_string(&*text).unwrap_or_else(|_| "\"\"".into());
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON name of the file of site `id`.
    fn file_json(names: &Interner, id: u32) -> &str {
        names.files.json(names.sites[(id - 1) as usize].path)
    }

    #[test]
    fn a_reused_path_address_is_not_taken_for_the_old_file() {
        let mut names = Interner::default();
        let a = names.cached_site(99, || b"(eval)", 1, 0, 1);
        // After a GC freed the string, another at its address, same line.
        let b = names.cached_site(99, || b"views/x.erb", 1, 0, 2);
        let c = names.cached_site(42, || b"(eval)", 1, 0, 2);
        assert_eq!(file_json(&names, a), "(eval)");
        assert_eq!(file_json(&names, b), "views/x.erb");
        assert_eq!(file_json(&names, c), "(eval)");
        assert_eq!(names.files.len(), 2);
    }

    #[test]
    fn file_names_are_escaped_for_json() {
        let mut names = Interner::default();
        let site = names.cached_site(1, || b"a \"b\"\\c\n\xff.rb", 1, 0, 1);
        assert_eq!(file_json(&names, site), "a \\\"b\\\"\\\\c\\n\u{fffd}.rb");
    }

    #[test]
    fn unique_eval_file_names_stop_at_the_file_cap() {
        let mut names = Interner::default();
        let mut site = 0;
        for i in 0..MAX_FILES + 500 {
            let name = format!("(eval at {i})");
            site = names.cached_site(i, || name.as_bytes(), 1, 5, 1);
        }
        assert_eq!(
            names.files.len(),
            MAX_FILES + 1,
            "the cap, plus the overflow name"
        );
        assert!(names.files.cap_reached && !names.cap_reached);
        assert_eq!(
            file_json(&names, site),
            OVERFLOW_FILE,
            "past the cap, one shared name"
        );
        assert!(names.files.by_key.len() <= MAX_PATH_KEYS);
    }

    #[test]
    fn sites_stop_at_the_site_cap() {
        let mut names = Interner::default();
        for line in 0..MAX_SITES as u32 + 10 {
            names.cached_site(1, || b"a.rb", line, 5, 1);
        }
        let site = names.cached_site(1, || b"a.rb", u32::MAX, 7, 1);
        assert!(names.cap_reached);
        assert_eq!(
            names.sites.len(),
            MAX_SITES + 2,
            "one overflow site per type"
        );
        assert_eq!(file_json(&names, site), OVERFLOW_FILE);
    }
}
