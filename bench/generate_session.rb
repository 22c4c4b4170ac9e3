# frozen_string_literal: true

# Writes sessions of `dump: :retained` dumps plus one full dump, as the middleware
# stores them (`<host>/<pid>/<seq>-<ms>-GET-leak-<salt>.jsonl.gz` and `.meta.json`),
# for bench/analysis.rb's `leaks` measurement.
#
# One process builds a baseline heap of about OBJECTS live objects (allocation
# tracing on), records the GC generation as the baseline, then serves "requests":
# each leaks PER strings into a module constant (Audit::LOG), refreshes a bounded
# cache (fills, then stays flat: not a leak) and makes garbage, then takes a
# retained dump (objects allocated since the baseline, `dump_all(since:)`). After
# request N, for each N in COUNTS, the session DIR/N gets retained dumps 1..N
# (hard links) and a full dump taken then (seq N + 1).
#
# Usage: ruby bench/generate_session.rb DIR OBJECTS PER COUNTS
#   e.g. ruby bench/generate_session.rb bench/data/session 1200000 100 50,100,200
require "objspace"
require "fileutils"
require "json"
require "zlib"

dir = ARGV.fetch(0)
objects = Integer(ARGV.fetch(1, "1200000"))
per = Integer(ARGV.fetch(2, "100"))
counts = ARGV.fetch(3, "50,100,200").split(",").map { |c| Integer(c) }.sort
FileUtils.mkdir_p(dir)
HOST = "bench-1"

ObjectSpace.trace_object_allocations_start

Record = Struct.new(:id, :name, :tags)
BASE = []
(objects / 5).times do |i|
  BASE << Record.new(i, "name-#{i}", ["t#{i % 7}"]) # 1 struct + 2 strings + 1 array + 1 string
end

module Audit
  LOG = []
  def self.record(n, request)
    n.times { |i| LOG << "audit #{request}.#{i}" } # LEAK_LINE
  end
end

CACHE = {}
def cache(request)
  CACHE.shift while CACHE.size >= 2000
  20.times { |i| CACHE["k#{request}.#{i}"] = [request, i] }
  Array.new(500) { |i| "garbage #{i}" }
  nil
end

def write_dump(path, since)
  GC.start
  tmp = "#{path}.tmp"
  File.open(tmp, "w") { |f| since ? ObjectSpace.dump_all(output: f, since: since) : ObjectSpace.dump_all(output: f) }
  Zlib::GzipWriter.open(path, Zlib::BEST_SPEED) { |w| File.open(tmp) { |f| IO.copy_stream(f, w) } }
  File.delete(tmp)
end

def stem(seq, ms)
  format("%06d-%d-GET-leak-%08x", seq, ms, seq * 2_654_435_761 % (2**32))
end

GC.start
baseline = GC.count
pid = Process.pid
work = File.join(dir, "all", HOST, pid.to_s)
FileUtils.mkdir_p(work)
retained = []
now = 1_764_400_000_000
meta = lambda do |seq, kind, gen|
  { version: 1, host: HOST, pid: pid, seq: seq, request: { method: "GET", path: "/leak", status: 200 },
    started_at_ms: now + seq, gc_generation: gen, requests: seq,
    baseline_generation: kind == "retained" ? baseline : nil, dump: kind, mode: "inline" }
end
(1..counts.max).each do |request|
  gen = GC.count
  Audit.record(per, request)
  cache(request)
  name = stem(request, now + request)
  write_dump(File.join(work, "#{name}.jsonl.gz"), baseline)
  File.write(File.join(work, "#{name}.meta.json"), JSON.generate(meta.call(request, "retained", gen)))
  retained << name
  next unless counts.include?(request)

  session = File.join(dir, request.to_s, HOST, pid.to_s)
  FileUtils.mkdir_p(session)
  retained.each do |r|
    %w[.jsonl.gz .meta.json].each { |ext| FileUtils.ln(File.join(work, r + ext), File.join(session, r + ext), force: true) }
  end
  full = stem(request + 1, now + request + 1)
  write_dump(File.join(session, "#{full}.jsonl.gz"), nil)
  File.write(File.join(session, "#{full}.meta.json"), JSON.generate(meta.call(request + 1, "full", GC.count)))
  warn "session #{request}: #{request} retained dumps + 1 full in #{File.join(dir, request.to_s)}"
end
FileUtils.rm_rf(File.join(dir, "all"))
puts "LEAK_LINE=#{__FILE__}:#{File.readlines(__FILE__).index { |l| l.include?('# LEAK_LINE') } + 1}"
