# frozen_string_literal: true

# Load benchmark: wrk against puma on 127.0.0.1 serving spec/fixtures/puma/config.ru,
# without the middleware (baseline) and with Rack::Objectspace dumping every 50th
# request (dump: :retained, mode: :fork), alternating, ROUNDS times each (the
# machine's noise moves p99 between runs by more than the middleware does).
# Prints non-2xx counts, latency percentiles and the p99 ratio of each round
# (target <= 1.5, zero non-2xx).
#
#   ruby bench/load.rb                 # 3 rounds of 30 s runs
#   CI=1 ruby bench/load.rb            # 1 round of 5 s runs (smoke test)
#   ROUNDS=5 DURATION=60 CONNECTIONS=16 THREADS=4 EVERY=50 MAX_CHILDREN=2 ruby bench/load.rb
#   TRACE=objspace ruby bench/load.rb  # objspace's allocation tracing instead of trace: :native
#
# wrk's p99 covers every request of the run, dumped ones included, so with
# the middleware it is an upper bound of the p99 of the requests not dumped.
require "json"
require "tmpdir"
require "net/http"
require_relative "../spec/support/servers"

DURATION = Integer(ENV.fetch("DURATION", ENV["CI"] ? 5 : 30))
ROUNDS = Integer(ENV.fetch("ROUNDS", ENV["CI"] ? 1 : 3))
CONNECTIONS = Integer(ENV.fetch("CONNECTIONS", 8))
WRK_THREADS = Integer(ENV.fetch("WRK_THREADS", 2))
PUMA_THREADS = Integer(ENV.fetch("THREADS", 4))
EVERY = Integer(ENV.fetch("EVERY", 50))
HEAP = Integer(ENV.fetch("APP_HEAP_OBJECTS", 200_000))
LUA = File.expand_path("load.lua", __dir__)

abort "bench/load.rb: wrk is not installed (apt-get install wrk, or bin/setup)" unless TestServers.which("wrk")

def to_ms(text)
  value = text.to_f
  case text
  when /us\z/ then value / 1000
  when /ms\z/ then value
  when /s\z/ then value * 1000
  else value
  end
end

def run(label, env, store)
  puma = TestServers.puma(threads: PUMA_THREADS, env: env.merge("APP_HEAP_OBJECTS" => HEAP.to_s), name: "bench-#{label}")
  # Warm up (JIT-free Ruby still has caches, and the retained baseline is the first dumped request).
  system("wrk", "-t1", "-c2", "-d1s", "http://127.0.0.1:#{puma.port}/warmup", out: File::NULL)
  out = IO.popen(["wrk", "-t#{WRK_THREADS}", "-c#{CONNECTIONS}", "-d#{DURATION}s", "--latency", "-s", LUA,
                  "http://127.0.0.1:#{puma.port}/page"], &:read)
  stats = JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{puma.port}/__flush")))
  dumps = Dir.glob("**/*.jsonl.gz", base: store).size
  FileUtils.rm_rf(Dir.glob("#{store}/*"))
  lua = out[/^LUA .*$/].to_s.scan(/(\w+)=(\d+)/).to_h { |k, v| [k, Integer(v)] }
  dist = out.scan(/^\s+(50|75|90|99)%\s+(\S+)/).to_h { |p, v| [p.to_i, to_ms(v)] }
  {
    label: label, rps: out[%r{Requests/sec:\s+([\d.]+)}, 1].to_f, responses: lua["responses"],
    non2xx: lua["non2xx"], socket_errors: lua["errors"], p50: dist[50], p90: dist[90], p99: dist[99],
    max: lua["max_us"].to_f / 1000, stats: stats.reject { |k, _| k == "pid" }, dumps: dumps, raw: out
  }
ensure
  puma&.stop
end

OBJECTSPACE_ENV = {
  "RACK_OBJECTSPACE_MODE" => "fork", "RACK_OBJECTSPACE_DUMP" => "retained", "RACK_OBJECTSPACE_EVERY" => EVERY.to_s,
  "RACK_OBJECTSPACE_MAX_CHILDREN" => ENV.fetch("MAX_CHILDREN", "2"), "OBJECTSPACE_TRACE" => ENV.fetch("TRACE", "true")
}.freeze

store = Dir.mktmpdir("objectspace-bench-")
rounds = []
begin
  ROUNDS.times do
    base = run("baseline", { "OBJECTSPACE_OFF" => "1" }, store)
    with = run("objectspace", OBJECTSPACE_ENV.merge("RACK_OBJECTSPACE_STORE" => "file://#{store}"), store)
    rounds << [base, with]
  end
ensure
  FileUtils.rm_rf(store)
end

puts "wrk -t#{WRK_THREADS} -c#{CONNECTIONS} -d#{DURATION}s against puma -t #{PUMA_THREADS}:#{PUMA_THREADS} " \
     "(single mode), app heap #{HEAP} strings, #{Etc.nprocessors} cores; objectspace: every #{EVERY}th request, " \
     "dump: :retained, mode: :fork, max_children: #{ENV.fetch('MAX_CHILDREN', 2)}, trace: #{ENV.fetch('TRACE', 'true')}"
puts format("%-5s %-12s %8s %10s %7s %8s %8s %8s %8s %9s %s", "round", "run", "req/s", "responses", "non-2xx",
            "p50 ms", "p90 ms", "p99 ms", "max ms", "p99 ratio", "dumps stored / dropped")
rounds.each_with_index do |(base, with), i|
  [base, with].each do |r|
    ratio = r.equal?(with) ? format("%.2f", with[:p99] / base[:p99]) : ""
    dumps = r.equal?(with) ? "#{r[:dumps]} / #{r[:stats]['dropped']}" : ""
    puts format("%-5d %-12s %8.0f %10d %7d %8.2f %8.2f %8.2f %8.2f %9s %s", i + 1, r[:label], r[:rps], r[:responses],
                r[:non2xx] + r[:socket_errors], r[:p50], r[:p90], r[:p99], r[:max], ratio, dumps)
  end
end
ratios = rounds.map { |base, with| with[:p99] / base[:p99] }
bad = rounds.sum { |_, with| with[:non2xx] + with[:socket_errors] }
throughput = rounds.sum { |_, with| with[:rps] } / rounds.sum { |base, _| base[:rps] }
puts format("p99 ratio (objectspace / baseline) per round: %s; median %.2f, worst %.2f (target <= 1.5); " \
            "throughput %.2fx baseline; non-2xx and socket errors: %d (target 0)",
            ratios.map { |r| format("%.2f", r) }.join(", "), ratios.sort[ratios.size / 2], ratios.max, throughput, bad)
exit(ratios.max <= 1.5 && bad.zero? ? 0 : 1) if ENV["BENCH_STRICT"]
