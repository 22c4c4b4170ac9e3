//! `rack-objectspace export SOURCE OUTDIR`: the census of every process in
//! SOURCE as Parquet under `OUTDIR/census/host=<host>/`, and per-dump
//! summaries under `OUTDIR/dumps/host=<host>/`, for DuckDB, Spark or Athena.
//! Streams: one batch or dump read at a time, one row group in memory.

pub mod census;
pub mod dumps;
pub mod parts;

use std::path::{Path, PathBuf};

use objectspace_core::analysis::session::Session;
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
    let series = objectspace_core::census::batch::series(found);
    for procs in series.chunk_by(|a, b| a.host == b.host) {
        let host = &procs[0].host;
        hosts.insert(host.clone());
        let mut parts = parts::Parts::<census::CensusRow>::new(
            census_dir.join(format!("host={}", partition_value(host))),
            limits,
        )?;
        for series in procs {
            report.processes += 1;
            report.warnings.extend(series.gaps());
            let mut process = census::Process::new(host, series.pid);
            let mut emit = |row: census::CensusRow| parts.push(row);
            for (_, _, input) in &series.batches {
                let raw = input.read_all()?;
                process.batch(&input.name(), &raw, &mut emit)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::io::Write;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("export-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    }

    const BATCH_1: &str = r#"{"census":1,"host":"web-1","pid":9,"seq":1,"points":3,"sites":3}
{"site":1,"file":"/app/a.rb","line":3,"type":"STRING","class":null}
{"site":2,"file":"/usr/lib/gems/foo-1.2.0/lib/foo.rb","line":7,"type":"OBJECT","class":"Foo"}
{"site":3,"file":"/app/c.rb","line":1,"type":"ARRAY","class":null}
{"base":{"requests":0,"gc_count":1,"swept_gc":1,"at":1000},"counts":[[1,5,200],[2,1,40]]}
{"requests":1,"gc_count":1,"swept_gc":1,"at":1010,"endpoints":[["GET","/",1]],"counts":[]}
{"requests":2,"gc_count":2,"swept_gc":2,"at":1020,"endpoints":[["GET","/",1]],"counts":[[1,6,240],[3,2,80]]}
{"walk":{"requests":2,"gc_count":2},"endpoints":[[1,"GET","/",6]]}
{"requests":3,"gc_count":2,"swept_gc":2,"at":1030,"endpoints":[["GET","/",1]],"counts":[]}
"#;

    // Batch 2 is missing: batch 3's base no longer lists site 2 (gone) and
    // names site 1 under another id.
    const BATCH_3: &str = r#"{"census":1,"host":"web-1","pid":9,"seq":3,"points":1,"sites":1}
{"site":4,"file":"/app/a.rb","line":3,"type":"STRING","class":null}
{"base":{"requests":10,"gc_count":4,"swept_gc":4,"at":2000},"counts":[[4,9,360]]}
{"requests":11,"gc_count":5,"swept_gc":5,"at":2010,"counts":[[4,10,400]]}
"#;

    fn rows(path: &Path) -> Vec<String> {
        let reader = SerializedFileReader::try_from(path).unwrap();
        reader
            .into_iter()
            .map(|row| {
                let row = row.unwrap();
                row.get_column_iter()
                    .filter(|(n, _)| {
                        ["requests", "file", "gem", "class", "count"].contains(&n.as_str())
                    })
                    .map(|(_, f)| f.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn rows_are_the_changes_the_anchor_and_drops_to_zero() {
        let dir = temp("rows");
        let store = dir.join("store/web-1/9");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("census-000001.ndjson.gz"), gzip(BATCH_1)).unwrap();
        std::fs::write(store.join("census-000003.ndjson.gz"), BATCH_3).unwrap(); // plain works too
        let out = dir.join("out");
        let limits = Limits {
            row_group: 3,
            file_rows: 6,
        };
        let report = export(dir.join("store").to_str().unwrap(), &out, limits).unwrap();
        assert_eq!(report.processes, 1);
        assert_eq!(report.batches, 2);
        assert!(report
            .warnings
            .iter()
            .any(|w| w.contains("batches 2..2 missing")));
        // Two files: 6 rows, then the rest (row groups of 3).
        assert_eq!(report.census_files.len(), 2, "{:?}", report.census_files);
        let mut all = Vec::new();
        for f in &report.census_files {
            assert!(f.starts_with(out.join("census/host=web-1")));
            all.extend(rows(f));
        }
        // requests, file, class, gem, count (schema order)
        let a = |req: u64, n: u64| format!("{req} \"/app/a.rb\" null \"app\" {n}");
        let foo = |req: u64, n: u64| {
            format!("{req} \"/usr/lib/gems/foo-1.2.0/lib/foo.rb\" \"Foo\" \"foo\" {n}")
        };
        let c = |req: u64, n: u64| format!("{req} \"/app/c.rb\" null \"app\" {n}");
        assert_eq!(
            all,
            vec![
                // batch 1's base: every site listed
                a(0, 5),
                foo(0, 1),
                // what GC 2 changed, seen at point 2: it began during request 1
                a(1, 6),
                c(1, 2),
                // the anchor is not here: batch 3 follows
                // batch 2 is missing: batch 3's base (site 1 at 9; sites 2
                // and 3 gone) and GC 5, seen at point 11, which began during
                // request 10: site 1 has one row there, the later
                a(10, 10),
                foo(10, 0),
                c(10, 0),
                // the anchor: point 11 is the last; no other site is alive
                a(11, 10),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_last_point_has_a_row_for_every_live_site() {
        let dir = temp("anchor");
        let store = dir.join("store/web-1/9");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("census-000001.ndjson.gz"), gzip(BATCH_1)).unwrap();
        let report = export(
            dir.join("store").to_str().unwrap(),
            &dir.join("out"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(report.census_rows, 7);
        let all = rows(&report.census_files[0]);
        let last: Vec<&String> = all.iter().filter(|r| r.starts_with("3 ")).collect();
        assert_eq!(
            last,
            vec![
                "3 \"/app/a.rb\" null \"app\" 6",
                "3 \"/usr/lib/gems/foo-1.2.0/lib/foo.rb\" \"Foo\" \"foo\" 1",
                "3 \"/app/c.rb\" null \"app\" 2",
            ]
        );
        // The schema: `at` is a UTC timestamp in milliseconds.
        let reader = SerializedFileReader::try_from(report.census_files[0].as_path()).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        let at = schema.column(2);
        assert_eq!(at.name(), "at");
        assert_eq!(
            format!("{:?}", at.logical_type_ref()),
            "Some(Timestamp { is_adjusted_to_u_t_c: true, unit: MILLIS })"
        );
        // An export into the same OUTDIR again is refused.
        let again = export(
            dir.join("store").to_str().unwrap(),
            &dir.join("out"),
            Limits::default(),
        );
        assert!(again
            .as_ref()
            .is_err_and(|e| e.usage && e.message.contains("not empty")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One process's batch replayed: each row's `CensusRow::placed`.
    fn placed(batch: &str) -> Vec<(i64, i64, i64, i64)> {
        let mut p = census::Process::new("h", 1);
        let mut out = Vec::new();
        let mut sink = |row: census::CensusRow| {
            out.push(row.placed());
            Ok(())
        };
        p.batch("b", batch.as_bytes(), &mut sink).unwrap();
        p.finish(&mut sink).unwrap();
        out
    }

    #[test]
    fn a_sampled_census_is_exported_scaled_by_its_rate() {
        const SAMPLED: &str = r#"{"census":1,"host":"web-1","pid":9,"seq":1,"points":1,"sites":1,"sample":8}
{"site":1,"file":"/app/a.rb","line":3,"type":"STRING","class":null}
{"base":{"requests":0,"gc_count":1,"swept_gc":1,"at":1000},"counts":[[1,5,200]]}
{"requests":1,"gc_count":2,"swept_gc":2,"at":1010,"counts":[[1,7,280]]}
"#;
        let counts: Vec<i64> = placed(SAMPLED).iter().map(|row| row.3).collect();
        assert_eq!(counts, vec![40, 56]);
    }

    #[test]
    fn a_gcs_counts_stand_at_the_request_it_began_in() {
        // GC 2 begins during request 2 (point 3 is the first to see it); its
        // lazy sweep ends during request 4, and point 5 has its counts. As in
        // `leaks`, they stand where GC 2 began: request 2, with point 2's time.
        // GCs 3 and 4 begin during request 6; GC 4's sweep is seen at point 8.
        const LAZY: &str = r#"{"census":1,"host":"web-1","pid":9,"seq":1,"points":8,"sites":1}
{"site":1,"file":"/app/a.rb","line":3,"type":"STRING","class":null}
{"base":{"requests":0,"gc_count":1,"swept_gc":1,"at":1000},"counts":[[1,5,200]]}
{"requests":1,"gc_count":1,"swept_gc":1,"at":1010,"counts":[]}
{"requests":2,"gc_count":1,"swept_gc":1,"at":1020,"counts":[]}
{"requests":3,"gc_count":2,"swept_gc":1,"at":1030,"counts":[]}
{"requests":4,"gc_count":2,"swept_gc":1,"at":1040,"counts":[]}
{"requests":5,"gc_count":2,"swept_gc":2,"at":1050,"counts":[[1,7,280]]}
{"requests":6,"gc_count":2,"swept_gc":2,"at":1060,"counts":[]}
{"requests":7,"gc_count":4,"swept_gc":2,"at":1070,"counts":[]}
{"requests":8,"gc_count":4,"swept_gc":4,"at":1080,"counts":[[1,9,360]]}
"#;
        // (requests, gc_count, at, count)
        assert_eq!(
            placed(LAZY),
            vec![
                (0, 1, 1000, 5),
                (2, 2, 1020, 7),
                (6, 4, 1060, 9),
                (8, 4, 1080, 9)
            ]
        );
    }

    #[test]
    fn a_site_has_one_row_at_a_request_its_latest() {
        // Point 1's walk gave site 1 its memsize; a GC that began after it
        // ended before the batch, which closes on it at the same request: two
        // changes stand at request 1, and the DuckDB query's `live` (the
        // rows at a process's last request) would add both up.
        const CLOSING: &str = r#"{"census":1,"host":"web-1","pid":9,"seq":1,"points":1,"sites":1}
{"site":1,"file":"/app/a.rb","line":3,"type":"STRING","class":null}
{"base":{"requests":0,"gc_count":1,"swept_gc":1,"at":1000},"counts":[[1,5,200]]}
{"requests":1,"gc_count":1,"swept_gc":1,"at":1010,"endpoints":[["GET","/",1]],"counts":[[1,5,400]]}
{"requests":1,"gc_count":2,"swept_gc":2,"at":1020,"endpoints":[],"counts":[[1,6,480]]}
"#;
        // (requests, gc_count, at, count)
        assert_eq!(placed(CLOSING), vec![(0, 1, 1000, 5), (1, 2, 1010, 6)]);
    }

    #[test]
    fn bad_batches_name_the_line_and_never_panic() {
        let mut p = census::Process::new("h", 1);
        let mut sink = |_row: census::CensusRow| Ok(());
        let cut = &BATCH_1[..BATCH_1.find("{\"requests\":2").unwrap() + 30];
        let e = p.batch("b.ndjson.gz", &gzip(cut), &mut sink).unwrap_err();
        assert_eq!(
            e,
            "b.ndjson.gz: line 7: record cut short at byte 30 of the line; the batch was cut short"
        );
        let gz = gzip(BATCH_1);
        let e = p
            .batch("b.ndjson.gz", &gz[..gz.len() - 12], &mut sink)
            .unwrap_err();
        assert!(
            e.starts_with("b.ndjson.gz: gzip stream truncated after line "),
            "{e}"
        );
        const POINT: &str =
            r#"{"requests":1,"gc_count":1,"swept_gc":1,"at":1,"counts":[[5,1,40]]}"#;
        let e = p.batch("b", POINT.as_bytes(), &mut sink).unwrap_err();
        assert_eq!(e, "b: line 1: site 5 is not named in this batch");
        let e = p
            .batch(
                "b",
                b"{\"requests\":1,\"gc_count\":1,\"swept_gc\":1,\"at\":1}\n[1,2\n",
                &mut sink,
            )
            .unwrap_err();
        assert!(e.starts_with("b: line 2: "), "{e}");
        // A field of the wrong type is an error, not a zero.
        let e = p
            .batch(
                "b",
                b"{\"requests\":1,\"gc_count\":\"1\",\"swept_gc\":1,\"at\":1}\n",
                &mut sink,
            )
            .unwrap_err();
        assert!(
            e.starts_with("b: line 1: malformed point record: invalid type: string"),
            "{e}"
        );
        // Arbitrary bytes: an error or nothing, never a panic.
        let mut x = 7u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = p.batch("junk", &bytes, &mut sink);
        }
    }

    #[test]
    fn partition_values_are_safe_folder_names() {
        assert_eq!(partition_value("web-1.example.com"), "web-1.example.com");
        assert_eq!(partition_value("a/b c"), "a%2Fb%20c");
        assert_eq!(partition_value(".."), "%2E%2E");
        assert_eq!(partition_value(""), "");
    }
}
