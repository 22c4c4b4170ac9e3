//! The report rows shared by every analysis. Field names are the stable JSON
//! schema scripts rely on: add fields, never rename or remove them.

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::heap::{gem_of, is_own_file, Heap};
use super::model::HeldBy;

/// The row label for objects allocated before allocation tracing started.
pub const NO_ALLOCATION_INFO: &str = "no allocation info";

/// One allocation site: objects of one type and class allocated at one file:line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Site {
    /// `null` for objects without allocation info.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// `file:line`, or "no allocation info".
    pub location: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// The class name, when the dump named it (anonymous and singleton classes have none).
    pub class: Option<String>,
    /// The gem the file belongs to ("app" for the application, "ruby" for the
    /// standard library); `null` without allocation info.
    pub gem: Option<String>,
    pub count: u64,
    pub memsize: u64,
    /// What holds the site's objects (`diff` and `leaks` only): `held_by`,
    /// `held_by_sampled` and `held_by_dump`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub paths: Option<HeldBy>,
}

/// A site by text: (location, type, class), the same in every dump and
/// process (unlike [`SiteKey`], which holds one heap's ids).
pub type SiteText = (String, String, Option<String>);

impl Site {
    /// This site by text (see [`SiteText`]).
    pub fn text_key(&self) -> SiteText {
        (self.location.clone(), self.ty.clone(), self.class.clone())
    }

    pub fn new(
        file: &str,
        line: u32,
        ty: &str,
        class: Option<&str>,
        count: u64,
        memsize: u64,
    ) -> Site {
        let (file_v, line_v, location) = if file.is_empty() {
            (None, None, NO_ALLOCATION_INFO.to_string())
        } else {
            (Some(file.to_string()), Some(line), format!("{file}:{line}"))
        };
        Site {
            file: file_v,
            line: line_v,
            location,
            ty: ty.to_string(),
            class: class.map(str::to_string),
            gem: (!file.is_empty()).then(|| gem_of(file)),
            count,
            memsize,
            paths: None,
        }
    }
}

/// A total for one value of a grouping (a type, a class, a gem, a file, a file:line).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub count: u64,
    pub memsize: u64,
}

/// Per-heap site key: (file id, line, type id, class address).
pub type SiteKey = (u32, u32, u32, u64);

/// Count and memsize per site of one heap.
#[derive(Debug, Default)]
pub struct SiteTable {
    pub sites: FxHashMap<SiteKey, (u64, u64)>,
}

impl SiteTable {
    #[inline]
    pub fn add(&mut self, key: SiteKey, memsize: u64) {
        let e = self.sites.entry(key).or_insert((0, 0));
        e.0 += 1;
        e.1 += memsize;
    }

    /// Sites as report rows, with names resolved from `heap`; this gem's own
    /// files are left out (they stay in the groupings, as gem `rack-objectspace`).
    pub fn rows(&self, heap: &Heap) -> Vec<Site> {
        self.rows_with_keys(heap)
            .into_iter()
            .filter(|&((file, ..), _)| !is_own_file(heap.files.get(file)))
            .map(|(_, site)| site)
            .collect()
    }

    /// Sites as report rows, each with its key.
    pub fn rows_with_keys(&self, heap: &Heap) -> Vec<(SiteKey, Site)> {
        self.sites
            .iter()
            .map(|(&(file, line, ty, class), &(count, memsize))| {
                let site = Site::new(
                    heap.files.get(file),
                    line,
                    heap.types.get(ty),
                    heap.class_name(class),
                    count,
                    memsize,
                );
                ((file, line, ty, class), site)
            })
            .collect()
    }

    /// Totals grouped by type, class, gem, file and file:line.
    pub fn groups(&self, heap: &Heap) -> Groups {
        let mut by_type: FxHashMap<String, (u64, u64)> = FxHashMap::default();
        let mut by_class: FxHashMap<String, (u64, u64)> = FxHashMap::default();
        let mut by_gem: FxHashMap<String, (u64, u64)> = FxHashMap::default();
        let mut by_file: FxHashMap<String, (u64, u64)> = FxHashMap::default();
        let mut by_location: FxHashMap<String, (u64, u64)> = FxHashMap::default();
        let mut gems: FxHashMap<u32, String> = FxHashMap::default();
        for (&(file, line, ty, class), &(count, memsize)) in &self.sites {
            let bump = |m: &mut FxHashMap<String, (u64, u64)>, k: &str| {
                let e = m.entry(k.to_string()).or_insert((0, 0));
                e.0 += count;
                e.1 += memsize;
            };
            bump(&mut by_type, heap.types.get(ty));
            bump(
                &mut by_class,
                heap.class_name(class).unwrap_or("(unnamed class)"),
            );
            let f = heap.files.get(file);
            let gem = gems.entry(file).or_insert_with(|| gem_of(f));
            bump(&mut by_gem, gem);
            if file == 0 {
                bump(&mut by_file, NO_ALLOCATION_INFO);
                bump(&mut by_location, NO_ALLOCATION_INFO);
            } else {
                bump(&mut by_file, f);
                bump(&mut by_location, &format!("{f}:{line}"));
            }
        }
        Groups {
            by_type: sorted(by_type),
            by_class: sorted(by_class),
            by_gem: sorted(by_gem),
            by_file: sorted(by_file),
            by_location: sorted(by_location),
        }
    }
}

/// The groupings of a summary or diff.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Groups {
    pub by_type: Vec<Group>,
    pub by_class: Vec<Group>,
    pub by_gem: Vec<Group>,
    pub by_file: Vec<Group>,
    pub by_location: Vec<Group>,
}

impl Groups {
    pub fn truncate(&mut self, top: usize) {
        if top > 0 {
            self.by_type.truncate(top);
            self.by_class.truncate(top);
            self.by_gem.truncate(top);
            self.by_file.truncate(top);
            self.by_location.truncate(top);
        }
    }
}

/// Largest memsize first, then count, then name (a stable order for scripts).
fn sorted(m: FxHashMap<String, (u64, u64)>) -> Vec<Group> {
    let mut v: Vec<Group> = m
        .into_iter()
        .map(|(name, (count, memsize))| Group {
            name,
            count,
            memsize,
        })
        .collect();
    v.sort_by(|a, b| {
        b.memsize
            .cmp(&a.memsize)
            .then(b.count.cmp(&a.count))
            .then(a.name.cmp(&b.name))
    });
    v
}

/// Sort sites by memsize (then count), most first, ties broken by location,
/// type and class: one order whatever order the sites were found in (a
/// summary split across threads finds them in another).
pub fn sort_by_memsize(sites: &mut [Site]) {
    sites.sort_by(|a, b| {
        b.memsize
            .cmp(&a.memsize)
            .then(b.count.cmp(&a.count))
            .then_with(|| a.location.cmp(&b.location))
            .then_with(|| a.ty.cmp(&b.ty))
            .then_with(|| a.class.cmp(&b.class))
    });
}

/// Sort sites by count (then memsize), most first, as `heapy diff` does.
pub fn sort_by_count(sites: &mut [Site]) {
    sites.sort_by(by_count);
}

/// The order of [`sort_by_count`].
pub fn by_count(a: &Site, b: &Site) -> std::cmp::Ordering {
    b.count
        .cmp(&a.count)
        .then(b.memsize.cmp(&a.memsize))
        .then_with(|| a.location.cmp(&b.location))
        .then_with(|| a.ty.cmp(&b.ty))
        .then_with(|| a.class.cmp(&b.class))
}
