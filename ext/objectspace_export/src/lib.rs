//! `rack-objectspace export SOURCE OUTDIR`: the census of every process in
//! SOURCE as Parquet under `OUTDIR/census/host=<host>/`, and per-dump
//! summaries under `OUTDIR/dumps/host=<host>/`, for DuckDB, Spark or Athena.
//! Streams: one batch or dump read at a time, one row group in memory.

pub mod census;
pub mod dumps;
pub mod parts;

use std::path::{Path, PathBuf};

use objectspace_core::analysis::leaks::Session;
use objectspace_core::analysis::AnalysisError;

pub use parts::Limits;

/// What an export wrote.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub hosts: usize,
    pub processes: usize,
    pub batches: usize,
    pub census_rows: u64,
    pub census_files: Vec<PathBuf>,
    pub dumps: usize,
    pub dump_rows: u64,
    pub dump_files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// An export that could not finish. `usage` errors are the caller's (exit 2).
#[derive(Debug)]
pub struct Error {
    pub message: String,
    pub usage: bool,
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error {
            message,
            usage: false,
        }
    }
}

impl From<AnalysisError> for Error {
    fn from(e: AnalysisError) -> Self {
        Error {
            usage: e.is_argument_error(),
            message: e.to_string(),
        }
    }
}

/// A host name as a hive partition value: bytes other than `[A-Za-z0-9._-]`
/// as `%XX` (keys already keep host names to `[A-Za-z0-9.-]`).
pub fn partition_value(host: &str) -> String {
    let mut out = String::new();
    for b in host.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

fn fresh(dir: &Path) -> Result<(), Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error {
                    message: format!(
                        "{} already exists and is not empty; remove it or give another OUTDIR",
                        dir.display()
                    ),
                    usage: true,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display()).into()),
    }
}

/// Export `source` (a folder or store URL the middleware wrote to) into `out`.
pub fn export(source: &str, out: &Path, limits: Limits) -> Result<Report, Error> {
    let census_dir = out.join("census");
    let dumps_dir = out.join("dumps");
    fresh(&census_dir)?;
    fresh(&dumps_dir)?;
    // Lists the dumps, and checks the source: a missing folder is an error.
    let session = Session::open(source)?;
    let found = objectspace_core::analysis::census::list(source)?;
    let mut report = Report::default();
    if found.is_empty() && session.entries.is_empty() {
        return Err(format!("{source}: no census batches and no dumps to export").into());
    }

    let mut hosts = std::collections::BTreeSet::new();
    for (host, procs) in census::by_process(found) {
        hosts.insert(host.clone());
        let mut parts = parts::Parts::<census::CensusRow>::new(
            census_dir.join(format!("host={}", partition_value(&host))),
            limits,
        )?;
        for (pid, batches) in procs {
            report.processes += 1;
            let mut process = census::Process::new(&host, pid);
            let mut emit = |row: census::CensusRow| parts.push(row);
            let mut last_seq = 0;
            for (seq, key, input) in &batches {
                if *seq != last_seq + 1 {
                    report.warnings.push(format!(
                        "process {host}/{pid}: census batches {}..{} missing (dropped or not stored yet)",
                        last_seq + 1,
                        seq - 1
                    ));
                }
                last_seq = *seq;
                let raw = input.read_all()?;
                process.batch(&input.name(), &raw, &mut emit)?;
                let _ = key;
                report.batches += 1;
            }
            process.finish(&mut emit)?;
        }
        let (rows, files) = parts.finish()?;
        report.census_rows += rows;
        report.census_files.extend(files);
    }
    if report.processes == 0 {
        report.warnings.push(format!(
            "{source}: no census batches (census: false, or an older version)"
        ));
    }

    for (host, list) in dumps::by_host(session) {
        hosts.insert(host.clone());
        let mut parts = parts::Parts::<dumps::DumpRow>::new(
            dumps_dir.join(format!("host={}", partition_value(&host))),
            limits,
        )?;
        for (entry, meta) in &list {
            report.dump_rows += dumps::export_dump(&host, entry, meta, &mut parts)?;
            report.dumps += 1;
        }
        let (_, files) = parts.finish()?;
        report.dump_files.extend(files);
    }
    report.hosts = hosts.len();
    Ok(report)
}

/// This process's peak resident set (VmHWM), in kB; 0 where /proc has none.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
