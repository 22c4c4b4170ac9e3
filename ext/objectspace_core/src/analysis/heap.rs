//! One dump in memory as a compact object table: 40 bytes per object plus the
//! distinct file names, whatever the size of the JSON.

use rustc_hash::FxHashMap;

use super::error::AnalysisError;
use super::refs::RawRefs;
use super::source::{read_in_parts, read_parts_at, read_records, Input, Progress, ReadStats};
use crate::scan::{unescape_lossy, Record};

/// "No generation recorded" (the object was allocated before tracing began).
pub const NO_GENERATION: u32 = u32::MAX;

/// Types interned first, in this order, so that [`known_type`] can name their
/// ids without a hash lookup (ids start at 1; 0 is the empty string).
const KNOWN_TYPES: [&str; 14] = [
    "STRING", "ARRAY", "HASH", "OBJECT", "IMEMO", "CLASS", "MODULE", "ICLASS", "DATA", "SYMBOL",
    "FLOAT", "STRUCT", "REGEXP", "BIGNUM",
];

/// The id of a common type name, by length and first bytes, then one comparison.
#[inline]
pub(crate) fn known_type(ty: &[u8]) -> Option<u32> {
    let (id, name): (u32, &[u8]) = match (ty.len(), ty.first(), ty.get(1)) {
        (6, Some(b'S'), Some(b'T')) if ty.get(2) == Some(&b'R') && ty.get(3) == Some(&b'I') => {
            (1, b"STRING")
        }
        (5, Some(b'A'), _) => (2, b"ARRAY"),
        (4, Some(b'H'), _) => (3, b"HASH"),
        (6, Some(b'O'), _) => (4, b"OBJECT"),
        (5, Some(b'I'), _) => (5, b"IMEMO"),
        (5, Some(b'C'), _) => (6, b"CLASS"),
        (6, Some(b'M'), _) => (7, b"MODULE"),
        (6, Some(b'I'), _) => (8, b"ICLASS"),
        (4, Some(b'D'), _) => (9, b"DATA"),
        (6, Some(b'S'), Some(b'Y')) => (10, b"SYMBOL"),
        (5, Some(b'F'), _) => (11, b"FLOAT"),
        (6, Some(b'S'), Some(b'T')) => (12, b"STRUCT"),
        (6, Some(b'R'), _) => (13, b"REGEXP"),
        (6, Some(b'B'), _) => (14, b"BIGNUM"),
        _ => return None,
    };
    (ty == name).then_some(id)
}

/// One heap object, as the analyses need it.
#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub addr: u64,
    pub class: u64,
    /// Saturates at 4 GiB (no single Ruby object is that big).
    pub memsize: u32,
    /// Index into [`Heap::files`]; 0 means no allocation info.
    pub file: u32,
    pub line: u32,
    pub generation: u32,
    /// The request that allocated it (`"request":N`); 0 when the dump does not say.
    pub request: u32,
    /// Index into [`Heap::types`].
    pub ty: u16,
}

/// Interns byte strings (file names, type names) to small ids.
#[derive(Debug, Default)]
pub struct Interner {
    ids: FxHashMap<Box<[u8]>, u32>,
    /// Text of each id (index 0 is the empty string, "none").
    pub text: Vec<String>,
    /// Strings that needed lossy decoding.
    pub lossy: u64,
}

impl Interner {
    pub fn new() -> Self {
        Interner {
            ids: FxHashMap::default(),
            text: vec![String::new()],
            lossy: 0,
        }
    }

    /// The id of a raw JSON string body.
    #[inline]
    pub fn intern(&mut self, raw: &[u8], escaped: bool) -> u32 {
        if let Some(&id) = self.ids.get(raw) {
            return id;
        }
        let (text, lossy) = unescape_lossy(raw, escaped);
        if lossy {
            self.lossy += 1;
        }
        let id = self.text.len() as u32;
        self.text.push(text);
        self.ids.insert(raw.into(), id);
        id
    }

    pub fn get(&self, id: u32) -> &str {
        &self.text[id as usize]
    }

    /// Take in another interner's strings; returns the new id of each of its
    /// ids. A string both read lossily counts once, as if read by one.
    fn absorb(&mut self, other: Interner) -> Vec<u32> {
        let mut map = vec![0u32; other.text.len()];
        let mut text: Vec<Option<String>> = other.text.into_iter().map(Some).collect();
        self.lossy += other.lossy;
        for (raw, id) in other.ids {
            let slot = id as usize;
            if let Some(&mine) = self.ids.get(&raw) {
                map[slot] = mine;
                if unescape_lossy(&raw, raw.contains(&b'\\')).1 {
                    self.lossy = self.lossy.saturating_sub(1);
                }
                continue;
            }
            let new = self.text.len() as u32;
            self.text.push(text[slot].take().unwrap_or_default());
            self.ids.insert(raw, new);
            map[slot] = new;
        }
        map
    }
}

/// A part of a dump being read on its own thread: its objects, and the last
/// type outside [`KNOWN_TYPES`] it read, with its id.
type Part = (Heap, (Vec<u8>, u32));

/// A dump read into memory.
#[derive(Debug, Default)]
pub struct Heap {
    pub name: String,
    pub objects: Vec<Obj>,
    pub files: Interner,
    pub types: Interner,
    /// Class and module names by address (from CLASS/MODULE records).
    pub class_names: FxHashMap<u64, String>,
    pub stats: ReadStats,
    /// ROOT records seen.
    pub roots: u64,
    /// Records skipped: no address or type, or not a heap object (SHAPE).
    pub skipped: u64,
    /// Each object's `references` and the ROOT records, when read with
    /// [`Heap::read_with_references`] (for retention paths).
    pub refs: Option<Box<RawRefs>>,
    last_file: Option<(Vec<u8>, u32)>,
}

impl Heap {
    /// Read a whole dump.
    pub fn read(input: &Input, progress: Progress) -> Result<Heap, AnalysisError> {
        Heap::read_inner(input, progress, false)
    }

    /// Read a whole dump, keeping each object's references and the ROOT
    /// records too (8 bytes a reference until [`super::paths::Graph::build`]
    /// resolves them).
    pub fn read_with_references(input: &Input, progress: Progress) -> Result<Heap, AnalysisError> {
        Heap::read_inner(input, progress, true)
    }

    fn empty(name: String, refs: bool) -> Heap {
        let mut heap = Heap {
            name,
            files: Interner::new(),
            types: Interner::new(),
            refs: refs.then(Box::default),
            ..Heap::default()
        };
        // Known types get fixed ids, so that `known_type` needs no lookup.
        for t in KNOWN_TYPES {
            heap.types.intern(t.as_bytes(), false);
        }
        heap
    }

    /// Read a whole dump on up to `threads` threads: a plain local file is
    /// cut at line starts into one byte range per thread, each read with
    /// `pread` and scanned on its own thread, and the parts are joined in file
    /// order (the same objects, ids and errors as [`Heap::read`]). Gzip
    /// cannot be cut (inflating must start at the stream's start): gzipped
    /// and stored dumps are read as [`Heap::read`] does, inflating on one
    /// thread while parsing on another.
    pub fn read_parallel(
        input: &Input,
        progress: Progress,
        threads: usize,
    ) -> Result<Heap, AnalysisError> {
        let parts = read_in_parts(
            input,
            progress,
            threads,
            Heap::part(input, false),
            Heap::add_to,
        )?;
        Ok(Heap::joined(input, false, parts))
    }

    /// [`Heap::read_parallel`] keeping each object's references and the ROOT
    /// records, as [`Heap::read_with_references`] does.
    pub fn read_parallel_with_references(
        input: &Input,
        progress: Progress,
        threads: usize,
    ) -> Result<Heap, AnalysisError> {
        let parts = read_in_parts(
            input,
            progress,
            threads,
            Heap::part(input, true),
            Heap::add_to,
        )?;
        Ok(Heap::joined(input, true, parts))
    }

    /// [`Heap::read_parallel`] with the cuts given (byte offsets, ascending;
    /// each moves on to the next line start): one thread per part. A gzipped
    /// or stored input is read whole, as by [`Heap::read`].
    pub fn read_split_at(
        input: &Input,
        progress: Progress,
        cuts: &[u64],
    ) -> Result<Heap, AnalysisError> {
        let parts = read_parts_at(
            input,
            progress,
            cuts,
            Heap::part(input, false),
            Heap::add_to,
        )?;
        Ok(Heap::joined(input, false, parts))
    }

    /// A new part of `input` of `bytes` bytes: its own table, its own ids
    /// (and the last type outside [`KNOWN_TYPES`] it read, with its id).
    fn part(input: &Input, refs: bool) -> impl Fn(u64) -> Part + Sync {
        let name = input.name();
        let per_object = if name.ends_with(".gz") { 18 } else { 280 };
        move |bytes| {
            let mut part = Heap::empty(name.clone(), refs);
            // Capacity that is never touched costs no memory: err on the high side.
            part.objects
                .reserve((bytes / per_object).min(1 << 26) as usize);
            (part, (Vec::new(), 0))
        }
    }

    /// [`Heap::add`] for a part and its last unknown type.
    fn add_to(part: &mut Part, rec: &Record) {
        part.0.add(rec, &mut part.1);
    }

    /// The parts of a dump, read in file order, as one heap.
    fn joined(input: &Input, refs: bool, parts: Vec<(Part, ReadStats)>) -> Heap {
        let mut parts = parts.into_iter();
        let Some(((mut heap, _), stats)) = parts.next() else {
            return Heap::empty(input.name(), refs);
        };
        heap.stats = stats;
        for ((mut part, _), stats) in parts {
            part.stats = stats;
            heap.absorb(part);
        }
        heap
    }

    /// Append the part of the dump read after this one.
    fn absorb(&mut self, part: Heap) {
        let files = self.files.absorb(part.files);
        let types = self.types.absorb(part.types);
        self.objects.reserve(part.objects.len());
        self.objects.extend(part.objects.into_iter().map(|mut o| {
            o.file = files.get(o.file as usize).copied().unwrap_or(0);
            o.ty = types
                .get(o.ty as usize)
                .map_or(o.ty, |&t| u16::try_from(t).unwrap_or(u16::MAX));
            o
        }));
        self.class_names.extend(part.class_names);
        self.stats.lines += part.stats.lines;
        self.stats.bytes += part.stats.bytes;
        self.roots += part.roots;
        self.skipped += part.skipped;
        if let (Some(mine), Some(theirs)) = (self.refs.as_deref_mut(), part.refs) {
            mine.absorb(*theirs);
        }
    }

    fn read_inner(input: &Input, progress: Progress, refs: bool) -> Result<Heap, AnalysisError> {
        let mut heap = Heap::empty(input.name(), refs);
        // Dumps run ~300 bytes a record, and gzip shrinks them ~14x. Capacity
        // that is never touched costs no memory, so err on the high side.
        let stored = input.stored_size();
        let per_object = if input.name().ends_with(".gz") {
            18
        } else {
            280
        };
        heap.objects
            .reserve((stored / per_object).min(1 << 26) as usize);
        // The last type outside KNOWN_TYPES and its id: such records come in
        // runs (MATCH, MATCH, ...) with known types between them.
        let mut last_ty: (Vec<u8>, u32) = (Vec::new(), 0);
        let stats = read_records(input, progress, |rec: &Record, _line| {
            heap.add(rec, &mut last_ty);
        })?;
        heap.stats = stats;
        Ok(heap)
    }

    #[inline]
    fn add(&mut self, rec: &Record, last_ty: &mut (Vec<u8>, u32)) {
        let ty = rec.ty;
        if ty == b"ROOT" {
            self.roots += 1;
            if let Some(refs) = self.refs.as_deref_mut() {
                refs.push_root(rec.root, rec.references);
            }
            return;
        }
        let Some(addr) = rec.address else {
            self.skipped += 1;
            return;
        };
        if ty.is_empty() || ty == b"SHAPE" {
            self.skipped += 1;
            return;
        }
        if let Some(name) = rec.name {
            if ty == b"CLASS" || ty == b"MODULE" {
                let (text, lossy) = unescape_lossy(name, rec.name_escaped);
                if lossy {
                    self.types.lossy += 1;
                }
                self.class_names.insert(addr, text);
            }
        }
        if rec.before_baseline {
            // A name for the classes of retained objects, not an object of the dump.
            return;
        }
        let ty_id = match known_type(ty) {
            Some(id) => id,
            None if !last_ty.0.is_empty() && last_ty.0.as_slice() == ty => last_ty.1,
            None => {
                let id = self.types.intern(ty, false);
                last_ty.0.clear();
                last_ty.0.extend_from_slice(ty);
                last_ty.1 = id;
                id
            }
        };
        let (file, line) = match rec.file {
            Some(f) => {
                // Neighbouring objects often come from the same file.
                let id = match self.last_file {
                    Some((ref raw, id)) if raw.as_slice() == f => id,
                    _ => {
                        let id = self.files.intern(f, rec.file_escaped);
                        let mut raw = self.last_file.take().map(|(r, _)| r).unwrap_or_default();
                        raw.clear();
                        raw.extend_from_slice(f);
                        self.last_file = Some((raw, id));
                        id
                    }
                };
                (id, rec.line.unwrap_or(0))
            }
            None => (0, 0),
        };
        self.objects.push(Obj {
            addr,
            class: rec.class.unwrap_or(0),
            memsize: rec.memsize.min(u32::MAX as u64) as u32,
            file,
            line,
            generation: rec.generation.unwrap_or(NO_GENERATION),
            request: rec.request.unwrap_or(0),
            ty: u16::try_from(ty_id).unwrap_or(u16::MAX),
        });
        if let Some(refs) = self.refs.as_deref_mut() {
            refs.push_object(rec.references);
        }
    }

    pub fn class_name(&self, addr: u64) -> Option<&str> {
        self.class_names.get(&addr).map(|s| s.as_str())
    }

    /// Strings read lossily (invalid escapes or UTF-8).
    pub fn lossy(&self) -> u64 {
        self.files.lossy + self.types.lossy
    }
}

/// This gem's name: its own files (the middleware's allocations) are left
/// out of the site tables of every report.
pub const OWN_GEM: &str = "rack-objectspace";

/// True for this gem's own Ruby files (`.../rack/objectspace.rb`, `.../rack/objectspace/*.rb`),
/// installed or in a checkout.
pub fn is_own_file(file: &str) -> bool {
    file.ends_with("/rack/objectspace.rb") || file.contains("/rack/objectspace/")
}

/// The gem a file belongs to, from its path: `.../gems/NAME-VERSION/...` gives
/// NAME (RubyGems, Bundler, Debian's rubygems-integration), Debian's
/// `vendor_ruby/NAME/...` and `site_ruby/NAME/...` give NAME, Ruby's own library
/// and `<internal:...>` give `ruby`, this gem's own files give
/// [`OWN_GEM`] (from a checkout too), anything else is `app`.
pub fn gem_of(file: &str) -> String {
    if file.is_empty() {
        return "no allocation info".to_string();
    }
    if is_own_file(file) {
        return OWN_GEM.to_string();
    }
    if file.starts_with("<internal:") {
        return "ruby".to_string();
    }
    // The first `gems/NAME-VERSION/` folder names the gem, so that a `gems/`
    // folder inside a gem (`.../gems/foo-1.0/lib/foo/gems/bar.rb`) does not;
    // failing that, the last `gems/DIR/` (a gem folder without a version).
    let mut unversioned = None;
    for (at, _) in file.match_indices("/gems/") {
        let rest = &file[at + "/gems/".len()..];
        let Some((dir, _)) = rest.split_once('/') else {
            continue;
        };
        // Not the `gems/3.4.0/` version folder itself.
        if dir.is_empty() || dir.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let name = strip_version(dir);
        if name.len() < dir.len() {
            return name.to_string();
        }
        unversioned = Some(name);
    }
    if let Some(name) = unversioned {
        return name.to_string();
    }
    for marker in ["/vendor_ruby/", "/site_ruby/"] {
        if let Some(at) = file.find(marker) {
            let rest = &file[at + marker.len()..];
            let mut parts = rest.split('/');
            let mut first = parts.next().unwrap_or("");
            // site_ruby/3.1.0/foo.rb
            if first.starts_with(|c: char| c.is_ascii_digit()) {
                first = parts.next().unwrap_or("");
            }
            let first = first.strip_suffix(".rb").unwrap_or(first);
            if !first.is_empty() {
                return first.to_string();
            }
        }
    }
    if let Some(at) = file.find("/lib/ruby/") {
        let rest = &file[at + "/lib/ruby/".len()..];
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            return "ruby".to_string();
        }
    }
    "app".to_string()
}

/// `rack-2.2.4` -> `rack`, `nokogiri-1.15.0-x86_64-linux` -> `nokogiri`,
/// a Bundler git checkout `rails-0123abcd4567` -> `rails`.
fn strip_version(dir: &str) -> &str {
    let bytes = dir.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'-' {
            let rest = &dir[i + 1..];
            let digit = rest.starts_with(|c: char| c.is_ascii_digit());
            let git = rest.len() >= 7 && rest.chars().all(|c| c.is_ascii_hexdigit());
            if digit || git {
                return &dir[..i];
            }
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::gem_of;

    #[test]
    fn known_types_have_their_interned_ids() {
        for (i, t) in super::KNOWN_TYPES.iter().enumerate() {
            assert_eq!(super::known_type(t.as_bytes()), Some(i as u32 + 1), "{t}");
        }
        assert_eq!(super::known_type(b"SHAPE"), None);
        assert_eq!(super::known_type(b"STRINX"), None);
    }

    #[test]
    fn gems_from_paths() {
        assert_eq!(
            gem_of("/home/u/.gem/ruby/3.1.0/gems/rack-2.2.4/lib/rack/builder.rb"),
            "rack"
        );
        assert_eq!(
            gem_of("/usr/share/rubygems-integration/all/gems/heapy-0.2.0/lib/heapy.rb"),
            "heapy"
        );
        assert_eq!(gem_of("/usr/lib/ruby/vendor_ruby/rack/request.rb"), "rack");
        assert_eq!(gem_of("/usr/lib/ruby/vendor_ruby/rack.rb"), "rack");
        assert_eq!(gem_of("/usr/lib/ruby/3.1.0/set.rb"), "ruby");
        assert_eq!(gem_of("<internal:kernel>"), "ruby");
        assert_eq!(gem_of("/app/models/user.rb"), "app");
        assert_eq!(
            gem_of("/home/u/src/rack-objectspace/lib/rack/objectspace/dumper.rb"),
            "rack-objectspace"
        );
        assert_eq!(
            gem_of("/srv/checkout/lib/rack/objectspace.rb"),
            "rack-objectspace"
        );
        assert_eq!(
            gem_of("/usr/lib/ruby/vendor_ruby/rack/objectspace/log.rb"),
            "rack-objectspace"
        );
        assert_eq!(
            gem_of("/b/ruby/3.1.0/bundler/gems/rails-0123abcd4567/x.rb"),
            "rails"
        );
        assert_eq!(
            gem_of("/g/gems/nokogiri-1.15.0-x86_64-linux/lib/n.rb"),
            "nokogiri"
        );
        assert_eq!(
            gem_of("/g/gems/active-record-ext-2.0/lib/n.rb"),
            "active-record-ext"
        );
    }

    /// The paths of the real Ruby 3.2, 3.3, 3.4 and 4.0 dumps under
    /// spec/fixtures/rubies (a source build's layout: /usr/local/lib/ruby/...),
    /// and of Debian's Ruby 3.1, name the same gems on every version.
    #[test]
    fn gems_are_named_the_same_on_every_ruby_version() {
        for abi in ["3.1.0", "3.2.0", "3.3.0", "3.4.0", "4.0.0", "3.5.0+1"] {
            for (path, gem) in [
                ("/usr/local/lib/ruby/{abi}/shellwords.rb", "ruby"),
                ("/usr/local/lib/ruby/{abi}/objspace.rb", "ruby"),
                ("/usr/local/lib/ruby/{abi}/rubygems/specification.rb", "ruby"),
                ("/usr/local/lib/ruby/{abi}/bundler/runtime.rb", "ruby"),
                ("/usr/local/lib/ruby/{abi}/x86_64-linux/etc.so", "ruby"),
                ("/usr/lib/ruby/{abi}/set.rb", "ruby"),
                (
                    "/usr/local/lib/ruby/gems/{abi}/gems/matrix-0.4.2/lib/matrix.rb",
                    "matrix",
                ),
                (
                    "/usr/local/lib/ruby/gems/{abi}/gems/net-http-0.9.1/lib/net/http.rb",
                    "net-http",
                ),
                (
                    "/usr/local/lib/ruby/gems/{abi}/gems/nokogiri-1.18.0-x86_64-linux-gnu/lib/nokogiri.rb",
                    "nokogiri",
                ),
                (
                    "/usr/local/lib/ruby/gems/{abi}/bundler/gems/rails-0123abcd4567/lib/rails.rb",
                    "rails",
                ),
                (
                    "/app/vendor/bundle/ruby/{abi}/gems/rack-3.1.8/lib/rack/builder.rb",
                    "rack",
                ),
                ("/home/u/.gem/ruby/{abi}/gems/puma-6.5.0/lib/puma.rb", "puma"),
                ("/usr/local/lib/ruby/site_ruby/{abi}/local_patch.rb", "local_patch"),
                ("/usr/local/lib/ruby/vendor_ruby/{abi}/vendored.rb", "vendored"),
            ] {
                let path = path.replace("{abi}", abi);
                assert_eq!(gem_of(&path), gem, "{path}");
            }
        }
        for internal in [
            "<internal:kernel>",
            "<internal:numeric>",
            "<internal:dir>",
            "<internal:pack>",
        ] {
            assert_eq!(gem_of(internal), "ruby");
        }
        assert_eq!(gem_of("/bundle/gems/logger-1.7.0/lib/logger.rb"), "logger");
        assert_eq!(gem_of("-e"), "app");
        assert_eq!(gem_of(""), "no allocation info");
    }

    #[test]
    fn a_gems_folder_inside_a_gem_does_not_rename_it() {
        assert_eq!(
            gem_of("/usr/local/lib/ruby/gems/3.4.0/gems/foo-1.0/lib/foo/gems/bar.rb"),
            "foo"
        );
        assert_eq!(
            gem_of("/usr/local/lib/ruby/gems/3.4.0/gems/foo-1.0/lib/gems/bar/baz.rb"),
            "foo"
        );
        // A gem folder without a version (a path: gem) is still a gem.
        assert_eq!(gem_of("/srv/gems/inhouse/lib/inhouse.rb"), "inhouse");
    }
}
