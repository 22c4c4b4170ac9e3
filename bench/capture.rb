# frozen_string_literal: true

# What one dumped request costs the request thread, on a heap of ~1.2M live
# objects (CI=true: ~120k): the original gem's approach (GC + dump_all in the
# request's process, into a pipe), mode: :inline and mode: :fork; and the peak
# RSS growth of the serving process while each dump is taken.
#
#   ruby bench/capture.rb            # full size
#   CI=true ruby bench/capture.rb    # smoke size
$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "rack/objectspace"
require "tmpdir"
require "logger"

ROUNDS = 3
objects = ENV["CI"] ? 40_000 : 400_000
ObjectSpace.trace_object_allocations_start
HEAP = Array.new(objects) { |i| ["s#{i}", { i => i }] } # 3 objects per entry
GC.start

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def rss_kb(field)
  File.read("/proc/self/status")[/^#{field}:\s+(\d+)/, 1].to_i
end

# Peak RSS growth (MB) while the block runs; resets the kernel's high-water mark first.
def peak_growth_mb
  File.write("/proc/self/clear_refs", "5")
  before = rss_kb("VmRSS")
  yield
  (rss_kb("VmHWM") - before) / 1024.0
rescue Errno::EACCES, Errno::ENOENT
  yield
  Float::NAN
end

def median(values) = values.sort[values.size / 2]

APP = ->(_env) { [200, { "content-type" => "text/plain" }, ["ok"]] }

# The original gem's way: GC and dump_all in the request, into a pipe drained by a thread.
def original_request
  GC.start
  reader, writer = IO.pipe
  drain = Thread.new { IO.copy_stream(reader, File::NULL) }
  ObjectSpace.dump_all(output: writer)
  writer.close
  drain.join
  reader.close
end

def middleware_request(middleware)
  _status, _headers, body = middleware.call(Rack::MockRequest.env_for("/bench"))
  started = now
  body.close # the dump (inline) or the fork (fork) happens here, on the request thread
  now - started
end

Dir.mktmpdir("capture-bench") do |dir|
  logger = Logger.new(File::NULL)
  results = {}
  results[:original] = Array.new(ROUNDS) do
    t = nil
    mb = peak_growth_mb { started = now; original_request; t = now - started }
    [t, mb]
  end
  %i[inline fork].each do |mode|
    middleware = Rack::Objectspace.new(APP, store: "file://#{dir}/#{mode}", mode: mode, trace: false, logger: logger)
    results[mode] = Array.new(ROUNDS) do
      t = nil
      mb = peak_growth_mb { t = middleware_request(middleware) }
      stats = middleware.flush(120)
      raise "dump not stored: #{stats}" unless stats[:failed].zero?

      [t, mb]
    end
    raw = Dir["#{dir}/#{mode}/**/*.meta.json"].map { |f| JSON.parse(File.read(f)) }.first
    results[:"#{mode}_meta"] = raw
  end

  meta = results[:inline_meta]
  puts format("heap: %<objects>d objects, dump %<raw>.0f MB raw JSON, %<gz>.1f MB gzipped (level 1)",
              objects: meta["objects"], raw: meta["bytes"] / 1e6, gz: meta["stored_bytes"] / 1e6)
  puts format("%-38s %14s %18s %10s", "approach", "request +ms", "peak RSS +MB", "vs inline")
  inline_ms = median(results[:inline].map(&:first)) * 1000
  { original: "original gem (GC + dump_all in request)", inline: "mode: :inline", fork: "mode: :fork" }.each do |key, label|
    ms = median(results[key].map(&:first)) * 1000
    mb = median(results[key].map(&:last))
    puts format("%-38s %14.1f %18.1f %9.1f%%", label, ms, mb, 100.0 * ms / inline_ms)
  end
  fork_ratio = median(results[:fork].map(&:first)) * 1000 / inline_ms
  puts format("fork/inline: %.3f (target <= 0.05)", fork_ratio)
end
