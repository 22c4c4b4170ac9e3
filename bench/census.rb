# frozen_string_literal: true

# What the census costs, in one run (ratios against baselines measured in the
# same run):
#
#   load     wrk against puma serving spec/fixtures/puma/config.ru, dumps off
#            (every: nil): no middleware, tracing alone (census: false, a
#            token so that every: nil is allowed), census on, the sampled
#            census (census: :sampled, default sample_rate). Alternating
#            rounds, each starting with the next configuration; throughput
#            and p99 ratios (of medians, and each round's range).
#   request  the request thread's time in Census#request, p50/p99, with 10k
#            distinct live allocation sites and GCs happening (a point after a
#            GC carries every site that changed).
#   table    the site table's bytes against GC.stat(:heap_allocated_pages) * 16 KiB
#            for heaps of 600k (the fixture app under issue 9's load) and 1.2M strings,
#            and the heap walk's time.
#   instructions  the load section's four configurations counted in
#            instructions per request (puma under callgrind): no noise, user
#            space only.
#   call     what every request pays for the middleware, in process: the
#            instructions of a call with the sampled census at 1 in 10^6 (no
#            window opens) over the same bare app's, callgrind at two numbers
#            of calls (the difference leaves boot and exit out).
#   window   what a sampled request costs (its window: hooks, records, ids
#            on 3.1, the GC's verdicts on 3.3+),
#            in process: the puma fixture's page through Rack::MockRequest,
#            CPU time per request with no middleware and with the sampled
#            census at 1 request in 2 (windows) and 1 in 10^6 (what every
#            request pays), in alternating rounds. Not run by default.
#
#   ruby bench/census.rb [load|request|table|instructions|call|window]...   # the first five by default
#   CI=1 ruby bench/census.rb                      # smoke sizes
#   ROUNDS=3 DURATION=20 CONNECTIONS=8 THREADS=4 ruby bench/census.rb load
#   CONFIGS=none,sampled ROUNDS=5 DURATION=10 ruby bench/census.rb load  # the sampled census alone
#   CONFIGS=none,sampled RACK_OBJECTSPACE_SAMPLE_RATE=1000000 ruby bench/census.rb instructions
#   CONFIGS=tracing,census CALLGRIND_DIR=/tmp/cg ruby bench/census.rb instructions  # keeps the files
require "etc"
require "json"
require "tmpdir"
require "net/http"
require "securerandom"
$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "rack/objectspace"

SECTIONS = ARGV.empty? ? %w[request table load instructions call] : ARGV
CI = !ENV["CI"].nil?

def percentile(sorted, q) = sorted[[(sorted.size * q).ceil - 1, 0].max]

# CPU time (user + system) a process has used, in microseconds.
def cpu_us(pid)
  fields = File.read("/proc/#{pid}/stat").split(") ").last.split
  (Integer(fields[11]) + Integer(fields[12])) * 1_000_000.0 / Etc.sysconf(Etc::SC_CLK_TCK)
end

def request_bench
  native = Rack::Objectspace::Native
  sites = Integer(ENV.fetch("SITES", 10_000))
  requests = Integer(ENV.fetch("REQUESTS", CI ? 2_000 : 20_000))
  # 10k distinct sites, each with live objects: one method per site.
  keep = []
  code = Array.new(sites) { |i| "def self.site_#{i}(k) = k << \"site #{i}\"" }.join("\n")
  mod = Module.new
  mod.module_eval(code, "bench_sites.rb", 1)
  native::Census.enable
  native::Tracer.start
  sites.times { |i| mod.send(:"site_#{i}", keep) }
  GC.start
  census = Rack::Objectspace::Census.new(Struct.new(:store_url, :queue_size, :census, :sample_rate, :sample_seed, :auto_dump).new(nil, 4, true, 1, nil, nil), nil, nil)
  census.instance_variable_set(:@pid, Process.pid) # no thread: batches taken below
  Rack::Objectspace::Census.owner = census
  env = { "REQUEST_METHOD" => "GET", "PATH_INFO" => "/page", "SCRIPT_NAME" => "" }
  times = []
  gcs = GC.count
  requests.times do |n|
    t = Process.clock_gettime(Process::CLOCK_MONOTONIC, :float_microsecond)
    census.request(env)
    times << Process.clock_gettime(Process::CLOCK_MONOTONIC, :float_microsecond) - t
    # The request's own work: some garbage, and now and then a site's object freed and another kept.
    Array.new(300) { |i| "row #{i}" }
    keep[n % sites] = "replaced #{n}" if (n % 7).zero?
    native::Census.take_batch("bench", Process.pid) if (n % 2000).zero?
  end
  gcs = GC.count - gcs
  stats = native::Tracer.stats
  sorted = times.sort
  puts format("request thread per request (Census#request), %d live sites, %d requests, %d GCs: " \
              "p50 %.1f us, p99 %.1f us, max %.1f us", stats[:sites], requests, gcs,
              percentile(sorted, 0.5), percentile(sorted, 0.99), sorted.last)
  puts format("reconciliations after GCs (on the thread that ran the GC, as a postponed job): %d, %d full, " \
              "%.2f ms each on average, %d heap slots read", stats[:reconciles], stats[:full_reconciles],
              stats[:reconcile_ms] / [stats[:reconciles], 1].max, stats[:slots_read])
ensure
  native::Tracer.stop
end

def table_bench
  native = Rack::Objectspace::Native
  [600_000, 1_200_000].each do |n|
    native::Census.enable
    native::Tracer.start
    heap = Array.new(CI ? n / 20 : n) { |i| "cached-#{i}" }
    GC.start
    walks = Array.new(3) { native::Census.walk[1] }.sort
    stats = native::Tracer.stats
    pages = GC.stat(:heap_allocated_pages) * 16 * 1024
    puts format("site table with %d strings kept: entries %.1f MB + sites/files %.2f MB = %.2fx of the heap's pages " \
                "(%.1f MB); heap walk (memsize, classes, endpoints) %.0f ms", heap.size,
                stats[:bytes] / 1e6, stats[:site_bytes] / 1e6, (stats[:bytes] + stats[:site_bytes]).fdiv(pages),
                pages / 1e6, walks[1])
    heap = nil
    native::Tracer.stop
    GC.start
  end
end

# The ways the fixture app is served: no middleware, tracing alone (census:
# false; a token, so that every: nil is allowed), the census on, the sampled
# census. Dumps off. CONFIGS=none,sampled keeps those it names.
def puma_configs(store, heap)
  common = { "RACK_OBJECTSPACE_STORE" => "file://#{store}", "RACK_OBJECTSPACE_EVERY" => "never",
             "RACK_OBJECTSPACE_AUTO_DUMP" => "false",
             "APP_HEAP_OBJECTS" => heap.to_s }
  configs = {
    "none" => { "OBJECTSPACE_OFF" => "1", "APP_HEAP_OBJECTS" => heap.to_s },
    "tracing" => common.merge("RACK_OBJECTSPACE_CENSUS" => "false", "RACK_OBJECTSPACE_TOKEN" => SecureRandom.hex(16)),
    "census" => common.merge("RACK_OBJECTSPACE_CENSUS" => "true"),
    "sampled" => common.merge("RACK_OBJECTSPACE_CENSUS" => "sampled")
  }
  ENV["CONFIGS"] ? configs.slice(*ENV["CONFIGS"].split(",")) : configs
end

# `count` GET /page on one keep-alive connection, one at a time.
def get_pages(port, count)
  Net::HTTP.start("127.0.0.1", port, read_timeout: 120) do |http|
    count.times do
      code = http.get("/page").code
      abort "bench/census.rb: GET /page answered #{code}" unless code == "200"
    end
  end
end

# The instructions a callgrind file counted, all threads.
def callgrind_total(file)
  Integer(File.foreach(file).find { |l| l.start_with?("totals:", "summary:") }.split[1])
end

# The same configurations counted in instructions, which a busy shared
# machine does not blur: puma under callgrind, WARMUP requests, a full GC, the
# counters zeroed (callgrind_control -z), then REQUESTS requests counted with
# the GC disabled but for a GC every GC_EVERY of them, full every MAJOR_EVERY
# (every thread of the process: request threads, the census thread, the GC). User space
# only: the kernel's share of a request (its socket work) is not counted, so
# these ratios are lower than throughput ones. Wall-clock timers run ~50x
# slower under valgrind: the census's 5 s batches come every few hundred
# requests instead of every 2,000 (a batch's fixed part is counted more often
# than under load).
def instructions_bench
  require_relative "../spec/support/servers"
  %w[valgrind callgrind_control].each do |tool|
    abort "bench/census.rb: #{tool} is not installed (apt-get install valgrind, or bin/setup)" unless TestServers.which(tool)
  end
  requests = Integer(ENV.fetch("REQUESTS", CI ? 200 : 5_000))
  warmup = Integer(ENV.fetch("WARMUP", CI ? 100 : 1_000))
  heap = Integer(ENV.fetch("APP_HEAP_OBJECTS", 200_000))
  gc_every = Integer(ENV.fetch("GC_EVERY", 500))
  major_every = Integer(ENV.fetch("MAJOR_EVERY", 5_000))
  store = Dir.mktmpdir("objectspace-census-bench-")
  # CALLGRIND_DIR=dir keeps each configuration's callgrind file there, for
  # callgrind_annotate (with a build that has symbols: docs/benchmarks.md).
  dir = ENV["CALLGRIND_DIR"]&.then { |d| FileUtils.mkdir_p(d).first } || Dir.mktmpdir("objectspace-census-callgrind-")
  configs = puma_configs(store, heap)
  per_request = configs.to_h do |label, env|
    out = File.join(dir, "#{label}.%p")
    puma = TestServers.puma(threads: 4, env: env, name: "census-ir-#{label}", timeout: 300,
                            wrap: ["valgrind", "--tool=callgrind", "--callgrind-out-file=#{out}"])
    begin
      stats = -> { JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{puma.port}/__stats"))) }
      get_pages(puma.port, warmup)
      # Past the census's first heap walk (at its first batch; later ones
      # keep to 0.2% of the time): the steady state is counted.
      get_pages(puma.port, 50) while stats.call.dig("census", "walks")&.zero?
      # A GC of the app's heap costs as much as thousands of requests, and
      # when Ruby runs one depends on how the heap grew before: the number of
      # GCs among one configuration's counted requests differed from
      # another's by up to 9 minor and 1 major in 10,000 requests, which moved
      # a figure by up to ~20,000 instructions a request. So the counted
      # requests run with the GC disabled, with a full GC before them and a
      # GC after every GC_EVERY of them: minor, and full every MAJOR_EVERY
      # (left alone, they ran 6-23 minor and 0-3 major GCs in 10,000
      # requests). The same GCs in every configuration.
      gc = ->(minor) { JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{puma.port}/__gc?minor=#{minor ? 1 : 0}&then=disable"))) }
      before = gc.call(false)
      system("callgrind_control", "-z", puma.pid.to_s, %i[out err] => File::NULL) or abort "callgrind_control -z failed"
      requests.fdiv(gc_every).ceil.times do |i|
        get_pages(puma.port, [gc_every, requests - i * gc_every].min)
        gc.call(((i + 1) * gc_every % major_every).nonzero?)
      end
      system("callgrind_control", "-d", puma.pid.to_s, %i[out err] => File::NULL) or abort "callgrind_control -d failed"
      after = stats.call
      allocations = (after["allocated"] - before["allocated"]).fdiv(requests)
      gcs = %w[minor_gcs major_gcs].map { |k| after[k] - before[k] }
      dump = "#{out.sub('%p', puma.pid.to_s)}.1"
      [label, [callgrind_total(dump).fdiv(requests), allocations, gcs]]
    ensure
      puma.stop(grace: 60)
    end
  end
  FileUtils.rm_rf([store, *(dir unless ENV["CALLGRIND_DIR"])])
  puts format("instructions per request under puma -t 4:4 (callgrind, %d requests after %d, a GC every %d, full every " \
              "%d, app heap %d strings):", requests, warmup, gc_every, major_every, heap)
  per_request.each do |label, (count, allocations, (minor, major))|
    puts format("  %-8s %9.0f (%.0f allocations a request; GCs among them %d minor, %d major)", label, count, allocations,
                minor, major)
  end
  count = ->(label) { per_request.dig(label, 0) }
  allocations = per_request.values.first[1]
  over = lambda do |label, base|
    return unless count.(label) && count.(base)

    format("%s +%.0f over %s (%.0f an allocation, %.3fx)", label, count.(label) - count.(base), base,
           (count.(label) - count.(base)) / allocations, count.(base) / count.(label))
  end
  rate = ENV.fetch("RACK_OBJECTSPACE_SAMPLE_RATE", Rack::Objectspace::Native::Tracer::DEFAULT_SAMPLE_RATE)
  ratios = [over.("tracing", "none"), over.("census", "tracing"), over.("census", "none"),
            over.("sampled", "none")&.sub("sampled", "sampled (1 in #{rate})")].compact
  puts "by instructions (user space only): #{ratios.join('; ')}" unless ratios.empty?
end

def load_bench
  require_relative "../spec/support/servers"
  abort "bench/census.rb: wrk is not installed (apt-get install wrk, or bin/setup)" unless TestServers.which("wrk")
  duration = Integer(ENV.fetch("DURATION", CI ? 5 : 20))
  rounds = Integer(ENV.fetch("ROUNDS", CI ? 1 : 3))
  connections = Integer(ENV.fetch("CONNECTIONS", 8))
  threads = Integer(ENV.fetch("THREADS", 4))
  heap = Integer(ENV.fetch("APP_HEAP_OBJECTS", 200_000))
  lua = File.expand_path("load.lua", __dir__)
  store = Dir.mktmpdir("objectspace-census-bench-")
  configs = puma_configs(store, heap)
  Object.const_set(:LOAD_BEFORE, File.read("/proc/loadavg").split.first(3).join(" "))
  results = configs.keys.to_h { |k| [k, []] }
  rounds.times do |round|
    # Each round starts with another configuration: none is not always first.
    configs.to_a.rotate(round).each do |label, env|
      puma = TestServers.puma(threads: threads, env: env, name: "census-bench-#{label}")
      begin
        system("wrk", "-t1", "-c2", "-d1s", "http://127.0.0.1:#{puma.port}/warmup", out: File::NULL)
        pid = JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{puma.port}/__stats")))["pid"]
        cpu_before = cpu_us(pid)
        out = IO.popen(["wrk", "-t2", "-c#{connections}", "-d#{duration}s", "--latency", "-s", lua,
                        "http://127.0.0.1:#{puma.port}/page"], &:read)
        cpu = (cpu_us(pid) - cpu_before).fdiv(Integer(out[/(\d+) requests in/, 1]))
        stats = JSON.parse(Net::HTTP.get(URI("http://127.0.0.1:#{puma.port}/__flush")))
        lua_out = out[/^LUA .*$/].to_s.scan(/(\w+)=(\d+)/).to_h { |k, v| [k, Integer(v)] }
        results[label] << { rps: out[%r{Requests/sec:\s+([\d.]+)}, 1].to_f, p99: lua_out["p99_us"].to_f / 1000,
                            p50: lua_out["p50_us"].to_f / 1000, cpu: cpu, census: stats["census"] }
      ensure
        puma&.stop
      end
    end
  end
  FileUtils.rm_rf(store)
  median = ->(a) { a.sort[a.size / 2] }
  puts "wrk -t2 -c#{connections} -d#{duration}s x #{rounds} rounds against puma -t #{threads}:#{threads}, " \
       "app heap #{heap} strings, dumps off (every: nil), #{Etc.nprocessors} cores"
  results.each do |label, rs|
    census = rs.last[:census]
    extra = census ? " census: #{census.slice('requests', 'points', 'stored', 'dropped', 'dropped_points')}" : ""
    puts format("%-8s req/s %8.0f  p50 %6.2f ms  p99 %6.2f ms  puma CPU %5.1f us/request (medians of rounds)%s",
                label, median.(rs.map { |r| r[:rps] }), median.(rs.map { |r| r[:p50] }), median.(rs.map { |r| r[:p99] }),
                median.(rs.map { |r| r[:cpu] }), extra)
  end
  rps = ->(l) { median.(results[l].map { |r| r[:rps] }) }
  p99 = ->(l) { median.(results[l].map { |r| r[:p99] }) }
  cpu = ->(l) { median.(results[l].map { |r| r[:cpu] }) }
  by_round = ->(a, b) { results[a].zip(results[b]).map { |x, y| x[:rps] / y[:rps] }.minmax }
  ran = ->(*labels) { labels.all? { |l| results.key?(l) } } # CONFIGS= may leave some out
  if ran.("census", "tracing", "none")
    puts format("census / none by round: %.2f-%.2fx; census / tracing by round: %.2f-%.2fx",
                *by_round.("census", "none"), *by_round.("census", "tracing"))
    puts format("census throughput: %.2fx tracing alone (target >= 0.95), %.2fx no middleware (target >= 0.85); " \
                "census p99: %.2fx tracing alone (target <= 1.1)", rps.("census") / rps.("tracing"),
                rps.("census") / rps.("none"), p99.("census") / p99.("tracing"))
  end
  if ran.("sampled", "none")
    rate = ENV.fetch("RACK_OBJECTSPACE_SAMPLE_RATE", Rack::Objectspace::Native::Tracer::DEFAULT_SAMPLE_RATE)
    puts format("sampled census (1 in %s): throughput %.3fx no middleware (target >= 0.98), p99 %.3fx (target <= 1.05); " \
                "by round %.2f-%.2fx", rate, rps.("sampled") / rps.("none"), p99.("sampled") / p99.("none"),
                *by_round.("sampled", "none"))
  end
  puts format("load average before/after: %s / %s", LOAD_BEFORE, File.read("/proc/loadavg").split.first(3).join(" "))
  return unless ran.("census", "tracing", "none")

  puts format("puma CPU per request (steadier than req/s on a shared machine): tracing +%.1f us (%.2fx none), " \
              "census +%.1f us over tracing (%.2fx none)", cpu.("tracing") - cpu.("none"), cpu.("none") / cpu.("tracing"),
              cpu.("census") - cpu.("tracing"), cpu.("none") / cpu.("census"))
end

# CPU seconds per call of `app` over `envs` (each a fresh copy), and the
# objects allocated per call.
def cpu_per_request(app, envs)
  GC.start
  allocated = GC.stat(:total_allocated_objects)
  started = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
  envs.each do |env|
    _, _, body = app.call(env.dup)
    body.close if body.respond_to?(:close)
  end
  [(Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) - started) / envs.size,
   (GC.stat(:total_allocated_objects) - allocated).fdiv(envs.size)]
end

# The window section's child (one sample rate per process: the tracer's
# hooks and the census are process-wide): rounds of no middleware, then the
# sampled census, on the same requests; one line per round.
def window_child(rate, requests, rounds)
  require "rack/mock"
  require_relative "request_work"
  heap = keep_heap
  page = ->(_env) { work }
  envs = Array.new(requests) { Rack::MockRequest.env_for("/page") }
  middleware = Rack::Objectspace.new(page, store: "file://#{Dir.mktmpdir}", auto_dump: false, census: :sampled,
                                           sample_rate: rate, logger: Logger.new(IO::NULL))
  rounds.times do
    none, allocated = cpu_per_request(page, envs)
    sampled, = cpu_per_request(middleware, envs)
    puts [none, sampled, allocated].join(" ")
  end
  heap.size # the app's long-lived heap, alive until here
end

def call_bench
  require_relative "../spec/support/servers"
  abort "bench/census.rb: valgrind is not installed (apt-get install valgrind, or bin/setup)" unless TestServers.which("valgrind")
  calls = CI ? [200, 600] : [10_000, 30_000]
  dir = Dir.mktmpdir("objectspace-census-call-")
  count = lambda do |mode, n|
    out = File.join(dir, "#{mode}.#{n}")
    system("valgrind", "--tool=callgrind", "--callgrind-out-file=#{out}", RbConfig.ruby, __FILE__, "call_child", mode,
           n.to_s, dir, %i[out err] => File::NULL) or abort "bench/census.rb call: the child failed"
    callgrind_total(out)
  end
  per_call = %w[bare middleware].to_h do |mode|
    [mode, (count.(mode, calls.last) - count.(mode, calls.first)).fdiv(calls.last - calls.first)]
  end
  FileUtils.rm_rf(dir)
  puts format("a call in process (callgrind, %d calls minus %d): a bare app %.0f instructions; around it the middleware " \
              "with the sampled census at 1 in 10^6 (no window: what every request pays) +%.0f",
              calls.last, calls.first, per_call["bare"], per_call["middleware"] - per_call["bare"])
end

# The call section's child: `calls` calls of a bare app on one env, or of the
# middleware around it (the sampled census, a window for 1 request in 10^6).
def call_child(mode, calls, dir)
  require "rack/mock"
  app = ->(_env) { [200, {}, ["ok"]] }
  middleware = Rack::Objectspace.new(app, store: "file://#{dir}", every: nil, census: :sampled, sample_rate: 1_000_000,
                                          sample_seed: 1, logger: Logger.new(IO::NULL))
  target = mode == "bare" ? app : middleware
  env = Rack::MockRequest.env_for("/users/1")
  target.call(env) # the process's first request starts the census
  GC.start
  calls.times { target.call(env) }
end

def window_bench
  requests = Integer(ENV.fetch("REQUESTS", CI ? 2_000 : 20_000))
  rounds = Integer(ENV.fetch("ROUNDS", CI ? 1 : 3))
  [2, 1_000_000].each do |rate|
    out = IO.popen([RbConfig.ruby, __FILE__, "window_child", rate.to_s, requests.to_s, rounds.to_s], &:read)
    abort "bench/census.rb window: the child failed" unless $?.success?
    rows = out.lines.map { |l| l.split.map(&:to_f) }
    over = rows.map { |none, sampled, _| (sampled - none) * 1e6 }.sort
    none = rows.map(&:first).sort[rows.size / 2] * 1e6
    puts format("sampled census at %s, in process (%d requests x %d rounds, %.0f allocations each): " \
                "+%.1f us a request over %.1f us with no middleware (%.3fx; rounds +%.1f to +%.1f us)%s",
                rate == 2 ? "1 request in 2" : "1 in 10^6", requests, rounds, rows.first[2], over[over.size / 2],
                none, none / (none + over[over.size / 2]), over.first, over.last,
                rate == 2 ? format(": a window costs ~%.0f us", 2 * over[over.size / 2]) : "")
  end
end

SECTIONS.each do |section|
  case section
  when "request" then request_bench
  when "table" then table_bench
  when "load" then load_bench
  when "instructions" then instructions_bench
  when "call" then call_bench
  when "call_child"
    call_child(ARGV[1], Integer(ARGV[2]), ARGV[3])
    exit
  when "window" then window_bench
  when "window_child"
    window_child(*ARGV.drop(1).map { |a| Integer(a) })
    exit
  else abort "bench/census.rb: unknown section #{section.inspect} (load, request, table, instructions, call, window)"
  end
end
