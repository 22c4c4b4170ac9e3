//! rack-objectspace-export SOURCE OUTDIR: run by `rack-objectspace export`.
//! Exit status: 0 success, 1 an input cannot be read or written, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use objectspace_export::{export, peak_rss_kb, Limits};

const USAGE: &str =
    "Usage: rack-objectspace export [--row-group N] [--file-rows N] [--stats] SOURCE OUTDIR

Writes the census of every process in SOURCE (a folder or store URL the
middleware wrote to) as Parquet under OUTDIR/census/host=<host>/, and a
summary of every dump (count and memsize by site) under OUTDIR/dumps/host=<host>/.

  --row-group N   rows per row group, held in memory at once (default 131072)
  --file-rows N   rows per file before the next part-NNNNN.parquet (default 8388608)
  --stats         print rows, time and peak RSS as JSON on stderr";

fn usage(message: &str) -> ExitCode {
    eprintln!("rack-objectspace: {message}");
    eprintln!("Run `rack-objectspace export --help` for usage.");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut limits = Limits::default();
    let mut stats = false;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--stats" => stats = true,
            "--row-group" | "--file-rows" => {
                let Some(n) = args
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                else {
                    return usage(&format!("{arg} takes a positive number"));
                };
                if arg == "--row-group" {
                    limits.row_group = usize::try_from(n).unwrap_or(usize::MAX);
                } else {
                    limits.file_rows = n;
                }
            }
            a if a.starts_with('-') && a.len() > 1 => {
                return usage(&format!("unknown option {a}"));
            }
            _ => positional.push(arg),
        }
    }
    let [source, out] = positional.as_slice() else {
        return usage(&format!(
            "export takes 2 arguments (SOURCE OUTDIR), got {}",
            positional.len()
        ));
    };
    let started = Instant::now();
    match export(source, &PathBuf::from(out), limits) {
        Ok(report) => {
            for w in &report.warnings {
                eprintln!("rack-objectspace: warning: {w}");
            }
            println!(
                "census: {} rows from {} process(es) on {} host(s), {} batch(es) -> {}/census ({} file(s))",
                report.census_rows,
                report.processes,
                report.hosts,
                report.batches,
                out.trim_end_matches('/'),
                report.census_files.len()
            );
            println!(
                "dumps:  {} rows from {} dump(s) -> {}/dumps ({} file(s))",
                report.dump_rows,
                report.dumps,
                out.trim_end_matches('/'),
                report.dump_files.len()
            );
            if stats {
                let elapsed = started.elapsed().as_secs_f64();
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "census_rows": report.census_rows,
                        "dump_rows": report.dump_rows,
                        "batches": report.batches,
                        "processes": report.processes,
                        "elapsed_s": elapsed,
                        "peak_rss_kb": peak_rss_kb(),
                    })
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.usage => usage(&e.message),
        Err(e) => {
            eprintln!("rack-objectspace: {}", e.message);
            let out = PathBuf::from(out);
            if out.join("census").exists() || out.join("dumps").exists() {
                eprintln!(
                    "rack-objectspace: export incomplete: files under {} may be missing",
                    out.display()
                );
            }
            ExitCode::from(1)
        }
    }
}
