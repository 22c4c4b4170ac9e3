# frozen_string_literal: true

# `rack-objectspace export` on a store of many processes' census: rows per
# second and peak RSS, for 25, 50 and 100 processes of the same store (peak
# RSS should stay flat: the export streams), and `leaks` over the same store
# as a baseline for time, measured in the same run.
#
# The store is written by the real census writer (Census::take_batch over a
# SiteTable, ext/objectspace_export/examples/census_store.rs): each process
# boots with one object at each of SITES sites, then serves REQUESTS requests
# with counts drifting at many sites, 3 leaking sites and a bounded cache; a
# GC every 10 requests, a batch every 2,000; ten hosts.
#
#   ruby bench/export.rb                       # 100 processes x 10,000 requests, 10k sites
#   CI=1 ruby bench/export.rb                  # smoke size (4/8/16 processes x 1,000 requests)
#   PROCESSES=100 REQUESTS=10000 SITES=10000 ruby bench/export.rb
require "json"
require "open3"
require "fileutils"
require "tmpdir"

ROOT = File.expand_path("..", __dir__)
CI = !ENV["CI"].nil?
PROCESSES = Integer(ENV.fetch("PROCESSES", CI ? 16 : 100))
REQUESTS = Integer(ENV.fetch("REQUESTS", CI ? 1_000 : 10_000))
SITES = Integer(ENV.fetch("SITES", CI ? 2_000 : 10_000))
SIZES = [PROCESSES / 4, PROCESSES / 2, PROCESSES].uniq.select(&:positive?)

def run!(*cmd, **opts)
  out, err, status = Open3.capture3(*cmd, **opts)
  abort "bench/export.rb: #{cmd.join(' ')} failed:\n#{err}" unless status.success?
  [out, err]
end

def target
  ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))
end

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

puts "building rack-objectspace-export and the store generator (cargo build --release)"
run!("cargo", "build", "--release", "-p", "objectspace_export", "--bin", "rack-objectspace-export",
     "--example", "census_store", chdir: ROOT)
export = File.join(target, "release", "rack-objectspace-export")

Dir.mktmpdir("export-bench") do |dir|
  full = File.join(dir, "store-#{PROCESSES}")
  t = now
  run!(File.join(target, "release", "examples", "census_store"), full, PROCESSES.to_s, REQUESTS.to_s, SITES.to_s)
  files = Dir.glob("**/census-*.ndjson.gz", base: full)
  bytes = files.sum { |f| File.size(File.join(full, f)) }
  puts format("store: %d processes x %d requests, %d sites each: %d batches, %.1f MB gzipped (written in %.1f s)",
              PROCESSES, REQUESTS, SITES, files.size, bytes / 1e6, now - t)

  # Smaller stores: the first N process folders of the same store, hard-linked.
  processes = Dir.glob("*/*", base: full).sort_by { |p| p.split("/").last.to_i }
  stores = SIZES.to_h do |n|
    next [n, full] if n == PROCESSES

    sub = File.join(dir, "store-#{n}")
    processes.first(n).each do |p|
      FileUtils.mkdir_p(File.join(sub, File.dirname(p)))
      FileUtils.cp_lr(File.join(full, p), File.join(sub, p))
    end
    [n, sub]
  end

  results = stores.map do |n, store|
    out_dir = File.join(dir, "out-#{n}")
    t = now
    _out, err = run!(export, "--stats", store, out_dir)
    wall = now - t
    stats = JSON.parse(err.lines.last)
    parquet = Dir.glob("census/**/*.parquet", base: out_dir).sum { |f| File.size(File.join(out_dir, f)) }
    [n, stats, wall, parquet]
  end

  # Baseline in the same run: leaks (the census reader) over the largest store,
  # its peak RSS polled from /proc (VmHWM) while it runs.
  t = now
  leaks_rss = 0
  Open3.popen3(RbConfig.ruby, File.join(ROOT, "exe", "rack-objectspace"), "leaks", full, "--format", "json") do |i, o, e, w|
    i.close
    reader = Thread.new { [o.read, e.read] }
    while w.alive?
      hwm = File.read("/proc/#{w.pid}/status")[/VmHWM:\s+(\d+)/, 1].to_i rescue 0 # rubocop:disable Style/RescueModifier
      leaks_rss = [leaks_rss, hwm].max
      sleep 0.1
    end
    reader.join
    abort "bench/export.rb: leaks failed" unless w.value.success?
  end
  leaks_wall = now - t

  puts
  puts "| processes | census rows | Parquet | export wall | rows/s | peak RSS | RSS vs #{SIZES.first} processes |"
  puts "|---|---|---|---|---|---|---|"
  base_rss = results.first[1]["peak_rss_kb"].to_f
  results.each do |n, stats, wall, parquet|
    puts format("| %d | %d | %.1f MB | %.2f s | %.0f | %.1f MB | %.2fx |", n, stats["census_rows"], parquet / 1e6,
                wall, stats["census_rows"] / wall, stats["peak_rss_kb"] / 1024.0, stats["peak_rss_kb"] / base_rss)
  end
  _n, _stats, wall, = results.last
  puts
  last_rss = results.last[1]["peak_rss_kb"]
  puts format("leaks over the %d-process store (same run): %.2f s, peak RSS %.1f MB; export takes %.2fx its time, " \
              "%.2fx its memory", PROCESSES, leaks_wall, leaks_rss / 1024.0, wall / leaks_wall,
              last_rss / [leaks_rss, 1].max.to_f)
end
