//! The data of a leaking site, shared by the analyses that find leaks
//! ([`super::census`], [`super::dump_leaks`]), the ranking
//! ([`super::ranking`]) and the one that groups them ([`super::findings`]);
//! it imports only the site it extends.

use serde::Serialize;

use super::report::Site;

/// An endpoint (request method and path) and how many live objects of a site it allocated.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
    pub count: u64,
}

impl Endpoint {
    /// Endpoints from object counts by (method, path), most objects first
    /// (see [`Endpoint::sort_most_first`]).
    pub fn from_counts(counts: impl IntoIterator<Item = ((String, String), u64)>) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = counts
            .into_iter()
            .map(|((method, path), count)| Endpoint {
                method,
                path,
                count,
            })
            .collect();
        Endpoint::sort_most_first(&mut out);
        out
    }

    /// Most objects first, then by path (stable: ties keep their order).
    pub fn sort_most_first(endpoints: &mut [Endpoint]) {
        endpoints.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    }
}

/// A leaking site: the last dump's live count and memsize, and its growth.
#[derive(Debug, Clone, Serialize)]
pub struct LeakSite {
    #[serde(flatten)]
    pub site: Site,
    pub host: String,
    pub pid: u32,
    /// Live objects added per request over the later half of the series (least squares).
    pub per_request: f64,
    /// Live objects added over the later half of the series.
    pub growth: i64,
    /// Memsize added over the later half of the series.
    pub memsize_growth: i64,
    /// Live objects in each dump of the process, in sequence order.
    pub series: Vec<u64>,
    pub memsize_series: Vec<u64>,
    /// Requests that allocated the live objects of the last dump, most first:
    /// by each record's `request` (the endpoint of the dump taken for that
    /// request, else "(request not dumped)"), or for records without it by
    /// `generation` against the metadata's `gc_generation`.
    #[serde(rename = "allocated_by")]
    pub endpoints: Vec<Endpoint>,
    /// From the census only: the site's live objects at every request the
    /// census covers, as steps `[requests, count]`: the count from that
    /// request on, until the next step (one step per GC that changed it,
    /// none dropped, unlike `series`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_steps: Option<Vec<(u64, u64)>>,
    /// From the census only, for a site in a gem or Ruby's library: the first
    /// frames in the app's own code of sampled objects there still alive, most
    /// samples first (see [`crate::callers`]): the line to change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub called_from: Vec<Caller>,
    // `held_by` (what holds the objects) comes with `site`: see super::paths.
}

/// An app line that led to a library site's allocations, from sampled stacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub file: String,
    pub line: u32,
    /// `file:line`.
    pub location: String,
    /// Sampled objects of the site still alive whose first app frame was this line.
    pub samples: u64,
}

/// An allocation site as named across dumps and census batches (by text,
/// not per-dump or per-batch ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SiteName {
    pub(super) file: String,
    pub(super) line: u32,
    pub(super) ty: String,
    pub(super) class: Option<String>,
}
