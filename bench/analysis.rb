# frozen_string_literal: true

# Benchmark of the analyser against heapy (Debian's ruby-heapy), on the same
# three full dumps of a ~1.2M-object heap written by bench/generate_dumps.rb.
#
#   ruby bench/analysis.rb          # full size: ~1.2M objects, ~370 MB of JSON per dump
#   CI=1 ruby bench/analysis.rb     # smoke run: 40k objects, a few seconds
#   BASELINE=/path/to/other/checkout ruby bench/analysis.rb
#                                   # also runs that checkout's exe (built) on the
#                                   # same dumps: ratios against it, same run
#
# Prints wall times of whole processes and ratios against heapy measured in the
# same run, parse throughput (from the analyser's own timing, and per process),
# and memory per object. The diff includes retention paths (held_by) for its top
# 10 sites. CPU time (user + sys) is printed beside wall time, as other work on
# the machine skews wall times. Nothing here asserts a time: the numbers are printed.
# Then `leaks` over sessions of 50/100/200 retained dumps plus one full dump
# (bench/generate_session.rb; SESSION_COUNTS=..., CI: 5/10/20), with paths.
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

# Run a command; returns [seconds, stdout, peak RSS in kB or nil, CPU seconds or nil].
def run(*cmd)
  time = File.executable?("/usr/bin/time") ? ["/usr/bin/time", "-f", "RSS_KB=%M CPU=%U+%S"] : []
  started = clock
  out, err, status = Open3.capture3(*time, *cmd)
  elapsed = clock - started
  abort "#{cmd.join(' ')} failed (#{status.exitstatus}):\n#{err}" unless status.success?
  cpu = err[/CPU=([\d.]+)\+([\d.]+)/] && (Float(Regexp.last_match(1)) + Float(Regexp.last_match(2)))
  [elapsed, out, err[/RSS_KB=(\d+)/, 1]&.to_i, cpu]
end

# "1.23 s (1.80 s CPU, 150 MB RSS)"
def cost(time, rss, cpu)
  extra = [cpu && format("%.2f s CPU", cpu), rss && format("%d MB RSS", rss / 1024)].compact
  format("%.2f s", time) + (extra.empty? ? "" : " (#{extra.join(', ')})")
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

# 3. leaks over sessions of N retained dumps + 1 full dump (paths from the full
#    one), written by bench/generate_session.rb: peak RSS should not grow with N.
SESSION_COUNTS = ENV.fetch("SESSION_COUNTS", ENV["CI"] ? "5,10,20" : "50,100,200").split(",").map { |c| Integer(c) }
SESSION_DIR = File.join(ROOT, "bench", "data", "session-#{OBJECTS}")
unless SESSION_COUNTS.all? { |n| Dir.exist?(File.join(SESSION_DIR, n.to_s)) }
  puts "generating sessions of #{SESSION_COUNTS.join('/')} retained dumps + 1 full (~#{OBJECTS} objects) in #{SESSION_DIR} ..."
  system(RUBY, File.join(__dir__, "generate_session.rb"), SESSION_DIR, OBJECTS.to_s, ENV.fetch("LEAK_PER", "100"),
         SESSION_COUNTS.join(","), exception: true)
end

sizes = DUMPS.map { |f| File.size(f) }
lines = File.foreach(DUMPS[0]).count
puts format("dumps: %d records, %.0f MB each (before.json), %.0f MB in all", lines, sizes[0] / 1e6, sizes.sum / 1e6)
puts

# 1. diff, whole process, with paths for the top 10 sites, against heapy (and a baseline checkout).
ours_t, ours_out, ours_rss, ours_cpu = best_of(3, RUBY, EXE, "diff", *DUMPS, "--format", "json", "--top", "10")
ours_top = JSON.parse(ours_out)["sites"].first
baseline = ENV["BASELINE"] && File.join(File.expand_path(ENV["BASELINE"]), "exe", "rack-objectspace")
if baseline
  base_t, _, base_diff_rss, base_cpu = best_of(3, RUBY, baseline, "diff", *DUMPS, "--format", "json", "--top", "10")
end
held = (ours_top["held_by"] || []).first
held_text = if held
              holder = held.find { |step| step["holds"] }
              names = held.map { |step| step["type"] == "ROOT" ? "root (#{step['name']})" : (step["name"] || step["class"] || step["type"]) }
              "#{names.join(' -> ')}; #{holder && holder['holds']} of #{ours_top['held_by_sampled']} traced held by #{holder && (holder['name'] || holder['class'])}"
            else
              "no held_by"
            end
heapy = ["heapy", "/usr/bin/heapy"].find { |h| system("command -v #{h} >/dev/null 2>&1") }
if heapy
  heapy_t, heapy_out, heapy_rss = run(heapy, "diff", *DUMPS)
  heapy_top = heapy_out.lines.first.to_s[/at: (.*)$/, 1]
else
  puts "heapy is not installed (apt-get install ruby-heapy): no baseline"
end

# 2. single-dump parse: the analyser's own timing (read + parse + object table),
#    and the whole process; plain and gzipped.
summary = lambda do |file, exe = EXE|
  t, out, rss, cpu = best_of(3, RUBY, exe, "summary", file, "--format", "json", "--top", "1")
  report = JSON.parse(out)
  [t, report["elapsed_ms"] / 1000.0, report["bytes"], report["objects"], rss, cpu]
end
plain_t, plain_native, bytes, objects, plain_rss, plain_cpu = summary.call(DUMPS[0])
gz_t, gz_native, _, _, gz_rss = summary.call(gz)
base_plain_t, base_plain_native, _, _, base_plain_rss, base_plain_cpu = summary.call(DUMPS[0], baseline) if baseline
_, _, base_rss = run(RUBY, "-I", File.join(ROOT, "lib"), "-e", 'require "rack/objectspace/analysis"')

puts "| measurement | rack-objectspace | heapy | ratio |"
puts "|---|---|---|---|"
if heapy
  puts format("| diff of 3 dumps, paths for the top 10 sites, whole process | %s | %.2f s (%d MB RSS) | **%.1fx faster** |",
              cost(ours_t, ours_rss, ours_cpu), heapy_t, (heapy_rss || 0) / 1024, heapy_t / ours_t)
  puts "| top site | #{ours_top['location']} (#{ours_top['count']}) | #{heapy_top} | #{ours_top['location'] == heapy_top ? 'same' : 'DIFFERENT'} |"
else
  puts format("| diff of 3 dumps, paths for the top 10 sites, whole process | %s | - | - |", cost(ours_t, ours_rss, ours_cpu))
end
puts "| what holds the top site | #{held_text} | - | - |"
if baseline
  puts format("| baseline diff (#{ENV['BASELINE']}) | %s | | ours/baseline: %.2fx time, %.2fx CPU, %.2fx RSS |",
              cost(base_t, base_diff_rss, base_cpu), ours_t / base_t, (ours_cpu || 0) / (base_cpu || 1),
              (ours_rss || 0).to_f / (base_diff_rss || 1))
end
puts format("| parse one plain dump (native) | %.3f s = %.2f GB/s | | |", plain_native, bytes / plain_native / 1e9)
puts format("| summary of one plain dump, whole process | %s | | |", cost(plain_t, plain_rss, plain_cpu))
if baseline
  puts format("| baseline summary (#{ENV['BASELINE']}), native / whole process | %.3f s / %s | | ours/baseline: %.2fx native, %.2fx whole |",
              base_plain_native, cost(base_plain_t, base_plain_rss, base_plain_cpu), plain_native / base_plain_native, plain_t / base_plain_t)
end
puts format("| parse one gzipped dump (native) | %.3f s = %.2f GB/s of JSON | | |", gz_native, bytes / gz_native / 1e9)
puts format("| summary of one gzipped dump, whole process | %.2f s | | |", gz_t)
if gz_rss && base_rss
  puts format("| memory per object (gzip summary RSS - Ruby baseline) | %.0f bytes/object (%d objects) | | |",
              (gz_rss - base_rss) * 1024.0 / objects, objects)
end
puts
puts "| leaks over a session, paths from its full dump, whole process (best of 2) | wall | CPU | peak RSS | stored | top site |"
puts "|---|---|---|---|---|---|"
SESSION_COUNTS.each do |n|
  dir = File.join(SESSION_DIR, n.to_s)
  t, out, rss, cpu = best_of(2, RUBY, EXE, "leaks", dir, "--format", "json", "--top", "10")
  report = JSON.parse(out)
  top = report["sites"].first
  stored = Dir.glob(File.join(dir, "**", "*.jsonl.gz")).sum { |f| File.size(f) }
  held = top && (top["held_by"] || []).first&.find { |step| step["holds"] }
  site = top ? "#{top['location']} (#{top['count']}#{held ? ", held by #{held['name'] || held['class']}" : ''})" : "none"
  puts format("| %d retained + 1 full | %.2f s | %.2f s | %d MB | %.0f MB | %s |", n, t, cpu || 0, (rss || 0) / 1024, stored / 1e6, site)
end
puts
puts "machine: #{`nproc`.strip} cores, load #{File.read('/proc/loadavg').split.first(3).join(' ')} (other work skews wall times)" if File.exist?("/proc/loadavg")
