# frozen_string_literal: true

# Benchmark of the analyser against heapy (Debian's ruby-heapy), on the same
# three full dumps of a ~1.2M-object heap written by bench/generate_dumps.rb.
#
#   ruby bench/analysis.rb          # full size: ~1.2M objects, ~370 MB of JSON per dump
#   CI=1 ruby bench/analysis.rb     # smoke run: 40k objects, a few seconds
#
# Prints wall times of whole processes and ratios against heapy measured in the
# same run, parse throughput (from the analyser's own timing, and per process),
# and memory per object. Nothing here asserts a time: the numbers are printed.
require "json"
require "open3"
require "fileutils"
require "rbconfig"
require "zlib"

ROOT = File.expand_path("..", __dir__)
OBJECTS = Integer(ENV.fetch("OBJECTS", ENV["CI"] ? "40000" : "1200000"))
DIR = File.join(ROOT, "bench", "data", OBJECTS.to_s)
EXE = File.join(ROOT, "exe", "rack-objectspace")
RUBY = RbConfig.ruby
DUMPS = %w[before.json after.json retained.json].map { |f| File.join(DIR, f) }

def clock
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# Run a command; returns [seconds, stdout, peak RSS in kB or nil].
def run(*cmd)
  time = File.executable?("/usr/bin/time") ? ["/usr/bin/time", "-f", "RSS_KB=%M"] : []
  started = clock
  out, err, status = Open3.capture3(*time, *cmd)
  elapsed = clock - started
  abort "#{cmd.join(' ')} failed (#{status.exitstatus}):\n#{err}" unless status.success?
  [elapsed, out, err[/RSS_KB=(\d+)/, 1]&.to_i]
end

def best_of(n, *cmd)
  Array.new(n) { run(*cmd) }.min_by(&:first)
end

unless DUMPS.all? { |f| File.exist?(f) }
  puts "generating three dumps of ~#{OBJECTS} objects in #{DIR} ..."
  system(RUBY, File.join(__dir__, "generate_dumps.rb"), DIR, OBJECTS.to_s, exception: true)
end
gz = File.join(DIR, "before.json.gz")
unless File.exist?(gz)
  Zlib::GzipWriter.open(gz, Zlib::BEST_SPEED) { |w| File.open(DUMPS[0]) { |f| IO.copy_stream(f, w) } }
end

sizes = DUMPS.map { |f| File.size(f) }
lines = File.foreach(DUMPS[0]).count
puts format("dumps: %d records, %.0f MB each (before.json), %.0f MB in all", lines, sizes[0] / 1e6, sizes.sum / 1e6)
puts

# 1. diff, whole process, against heapy.
ours_t, ours_out, ours_rss = best_of(3, RUBY, EXE, "diff", *DUMPS, "--format", "json", "--top", "5")
ours_top = JSON.parse(ours_out)["sites"].first
heapy = ["heapy", "/usr/bin/heapy"].find { |h| system("command -v #{h} >/dev/null 2>&1") }
if heapy
  heapy_t, heapy_out, heapy_rss = run(heapy, "diff", *DUMPS)
  heapy_top = heapy_out.lines.first.to_s[/at: (.*)$/, 1]
else
  puts "heapy is not installed (apt-get install ruby-heapy): no baseline"
end

# 2. single-dump parse: the analyser's own timing (read + parse + object table),
#    and the whole process; plain and gzipped.
summary = lambda do |file|
  t, out, rss = best_of(3, RUBY, EXE, "summary", file, "--format", "json", "--top", "1")
  report = JSON.parse(out)
  [t, report["elapsed_ms"] / 1000.0, report["bytes"], report["objects"], rss]
end
plain_t, plain_native, bytes, objects, _ = summary.call(DUMPS[0])
gz_t, gz_native, _, _, gz_rss = summary.call(gz)
_, _, base_rss = run(RUBY, "-I", File.join(ROOT, "lib"), "-e", 'require "rack/objectspace/analysis"')

puts "| measurement | rack-objectspace | heapy | ratio |"
puts "|---|---|---|---|"
if heapy
  puts format("| diff of 3 dumps, whole process | %.2f s (%d MB RSS) | %.2f s (%d MB RSS) | **%.1fx faster** |",
              ours_t, (ours_rss || 0) / 1024, heapy_t, (heapy_rss || 0) / 1024, heapy_t / ours_t)
  puts "| top site | #{ours_top['location']} (#{ours_top['count']}) | #{heapy_top} | #{ours_top['location'] == heapy_top ? 'same' : 'DIFFERENT'} |"
else
  puts format("| diff of 3 dumps, whole process | %.2f s | - | - |", ours_t)
end
puts format("| parse one plain dump (native) | %.3f s = %.2f GB/s | | |", plain_native, bytes / plain_native / 1e9)
puts format("| summary of one plain dump, whole process | %.2f s | | |", plain_t)
puts format("| parse one gzipped dump (native) | %.3f s = %.2f GB/s of JSON | | |", gz_native, bytes / gz_native / 1e9)
puts format("| summary of one gzipped dump, whole process | %.2f s | | |", gz_t)
if gz_rss && base_rss
  puts format("| memory per object (gzip summary RSS - Ruby baseline) | %.0f bytes/object (%d objects) | | |",
              (gz_rss - base_rss) * 1024.0 / objects, objects)
end
puts
puts "machine: #{`nproc`.strip} cores, load #{File.read('/proc/loadavg').split.first(3).join(' ')} (other work skews wall times)" if File.exist?("/proc/loadavg")
