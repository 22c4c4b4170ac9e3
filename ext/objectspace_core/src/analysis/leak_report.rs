//! The report of `leaks`, whichever source ranked its sites (the census or
//! the dumps): the sites, each process's part, and the findings made of them.

use std::collections::HashSet;

use serde::Serialize;

use super::findings::{self, Finding};
use super::leak_site::LeakSite;
use super::ranking::SiteRanking;
use super::session::DumpInfo;

/// One process's part of the session.
#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub host: String,
    pub pid: u32,
    /// Dumps read, in sequence order, with objects and memsize counted from each.
    pub dumps: Vec<DumpInfo>,
    /// Dumps that could not be read: key and error.
    pub skipped: Vec<Skipped>,
    pub leaking_sites: usize,
    /// Dumps asked for but not in the store (gaps in `seq`: dropped or failed).
    pub missing_dumps: u64,
    /// From the census only: the requests the process served, as far as
    /// the census covers them (where the sites' `census_steps` end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_requests: Option<u64>,
    /// From the census only: its observations, the first point and one per
    /// GC seen (at least 4 are needed to rank anything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_gcs: Option<u64>,
    /// From a sampled census only: one allocation in this many was recorded
    /// and its counts are scaled by it (see [`crate::sample::interval`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census_sample: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub key: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Leaks {
    pub command: &'static str,
    pub source: String,
    /// Leaking sites over every process, fastest growing first.
    pub sites: Vec<LeakSite>,
    /// Growing sites left out under the noise floor (see [`Floor`]).
    pub hidden_sites: usize,
    pub processes: Vec<ProcessReport>,
    /// Human-readable warnings (skipped dumps, too few dumps).
    pub warnings: Vec<String>,
    /// Growing sites above the noise floor, a site in several processes once.
    pub growing_sites: usize,
    /// The leaks: the sites that grow together, one finding each, most
    /// objects per request first (see [`super::findings`]).
    pub findings: Vec<Finding>,
    /// Every growing site above the floor, one per process, series left out:
    /// what the findings are made of.
    #[serde(skip)]
    pub members: Vec<LeakSite>,
}

impl Leaks {
    /// The report of the sites `kept` ranked, before retention paths are
    /// attached and findings made ([`Leaks::conclude`]).
    pub(super) fn new(
        source: &str,
        ranking: SiteRanking,
        processes: Vec<ProcessReport>,
        warnings: Vec<String>,
    ) -> Leaks {
        let (sites, hidden_sites, members) = ranking.ranked();
        Leaks {
            command: "leaks",
            source: source.to_string(),
            sites,
            hidden_sites,
            processes,
            warnings,
            growing_sites: 0,
            findings: Vec::new(),
            members,
        }
    }

    /// Group the sites into findings (after the sites' paths are attached),
    /// keeping the `top` (0: all).
    pub(super) fn conclude(&mut self, top: usize) {
        let members = std::mem::take(&mut self.members);
        self.growing_sites = members
            .iter()
            .map(|m| m.site.text_key())
            .collect::<HashSet<_>>()
            .len();
        self.findings = findings::findings(&members, &mut self.sites, top);
    }
}
