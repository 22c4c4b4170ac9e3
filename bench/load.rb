# frozen_string_literal: true

# Load benchmark: wrk against puma on 127.0.0.1 serving spec/fixtures/puma/config.ru,
# once without the middleware and once with Rack::Objectspace dumping every 50th
# request (dump: :retained, mode: :fork). Prints non-2xx counts, latency
# percentiles and the p99 ratio (target <= 1.5, zero non-2xx).
#
#   ruby bench/load.rb                 # 30 s per run
#   CI=1 ruby bench/load.rb            # 5 s per run (smoke test)
#   DURATION=60 CONNECTIONS=16 THREADS=4 EVERY=50 MAX_CHILDREN=2 TRACE=0 ruby bench/load.rb
#
# wrk's p99 covers every request of the run, dumped ones included, so with
# the middleware it is an upper bound of the p99 of the requests not dumped.
require "json"
require "tmpdir"
require "net/http"
require_relative "../spec/support/servers"

DURATION = Integer(ENV.fetch("DURATION", ENV["CI"] ? 5 : 30))
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

def run(label, env)
  puma = TestServers.puma(threads: PUMA_THREADS, env: env.merge("APP_HEAP_OBJECTS" => HEAP.to_s), name: "bench-#{label}")
  # Warm up (JIT-free Ruby still has caches, and the retained baseline is the first dumped request).
  system("wrk", "-t1", "-c2", "-d1s", "http://127.0.0.1:#{puma.port}/warmup", out: File::NULL)
  out = IO.popen(["wrk", "-t#{WRK_THREADS}", "-c#{CONNECTIONS}", "-d#{DURATION}s", "--latency", "-s", LUA,
                  "http://127.0.0.1:#{puma.port}/page"], &:read)
  stats = JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{puma.port}/__flush")))
  lua = out[/^LUA .*$/].to_s.scan(/(\w+)=(\d+)/).to_h { |k, v| [k, Integer(v)] }
  dist = out.scan(/^\s+(50|75|90|99)%\s+(\S+)/).to_h { |p, v| [p.to_i, to_ms(v)] }
  {
    label: label, rps: out[%r{Requests/sec:\s+([\d.]+)}, 1].to_f, responses: lua["responses"],
    non2xx: lua["non2xx"], socket_errors: lua["errors"], p50: dist[50], p90: dist[90], p99: dist[99],
    max: lua["max_us"].to_f / 1000, stats: stats.reject { |k, _| k == "pid" }, raw: out
  }
ensure
  puma&.stop
end

store = Dir.mktmpdir("objectspace-bench-")
results = []
begin
  results << run("baseline", "OBJECTSPACE_OFF" => "1")
  results << run("objectspace", "RACK_OBJECTSPACE_STORE" => "file://#{store}", "RACK_OBJECTSPACE_MODE" => "fork",
                                 "RACK_OBJECTSPACE_DUMP" => "retained", "RACK_OBJECTSPACE_EVERY" => EVERY.to_s,
                                 "RACK_OBJECTSPACE_MAX_CHILDREN" => ENV.fetch("MAX_CHILDREN", "2"),
                                 "OBJECTSPACE_TRACE" => ENV.fetch("TRACE", "1"))
ensure
  dumps = Dir.glob("**/*.jsonl.gz", base: store).size
  FileUtils.rm_rf(store)
end

puts "wrk -t#{WRK_THREADS} -c#{CONNECTIONS} -d#{DURATION}s against puma -t #{PUMA_THREADS}:#{PUMA_THREADS} " \
     "(single mode), app heap #{HEAP} strings, #{Etc.nprocessors} cores"
puts format("%-12s %10s %10s %7s %9s %9s %9s %9s", "run", "req/s", "responses", "non-2xx", "p50 ms", "p90 ms",
            "p99 ms", "max ms")
results.each do |r|
  puts format("%-12s %10.0f %10d %7d %9.2f %9.2f %9.2f %9.2f", r[:label], r[:rps], r[:responses], r[:non2xx],
              r[:p50], r[:p90], r[:p99], r[:max])
end
base, with = results
ratio = with[:p99] / base[:p99]
puts "objectspace: every #{EVERY}th request, dump: :retained, mode: :fork, max_children: " \
     "#{ENV.fetch('MAX_CHILDREN', 2)}, trace: #{ENV['TRACE'] != '0'}; stats #{with[:stats]}; " \
     "#{dumps} dumps stored"
puts format("p99 ratio (objectspace / baseline): %.2f (target <= 1.5); non-2xx: %d (target 0)", ratio,
            with[:non2xx] + with[:socket_errors])
exit(ratio <= 1.5 && (with[:non2xx] + with[:socket_errors]).zero? ? 0 : 1) if ENV["BENCH_STRICT"]
