# frozen_string_literal: true

require "logger"
require "stringio"
require "rack/objectspace/analysis"
require "rack/objectspace/analysis/text"

# The census: live objects per allocation site at every request, stored in
# batches without a dump, and `leaks` reading it.

require_relative "../fixtures/census_app"
require_relative "../fixtures/census_lazy_app"

RSpec.describe "Rack::Objectspace census" do
  let(:dir) { Dir.mktmpdir("objectspace-census") }
  let(:log) { StringIO.new }
  let(:logger) { Logger.new(log) }
  after do
    FileUtils.rm_rf(dir)
    Rack::Objectspace::Native::Tracer.stop
  end

  # Specs before this one may leave objspace's own allocation tracing on
  # (trace: :objspace); started N times, it needs N stops.
  before(:all) do
    16.times { ObjectSpace.trace_object_allocations_stop }
    ObjectSpace.trace_object_allocations_clear # its stale entries would name reused addresses
  end

  def census_lines(bytes)
    Zlib::GzipReader.new(StringIO.new(bytes)).read.lines.map { |l| JSON.parse(l) }
  end

  def census_files(dir)
    Dir.glob("**/census-*.ndjson.gz", base: dir).sort
  end

  # n requests, a third of them to /profile, in an order as random as users'.
  def burst(middleware, n)
    request = Rack::MockRequest.new(Rack::Lint.new(middleware))
    random = Random.new(42)
    n.times { request.get(random.rand(3).zero? ? "/profile" : "/home") }
  end

  describe "options" do
    it "is on by default with the native tracer, and census: false turns it off" do
      on = Rack::Objectspace.new(CensusApp, store: "file://#{dir}", logger: logger)
      expect(on.config.census).to be(true)
      expect(on.stats).to include(:census)
      off = Rack::Objectspace.new(CensusApp, store: "file://#{dir}", census: false, logger: logger)
      expect(off.config.census).to be(false)
      expect(off.stats).not_to include(:census)
      objspace = Rack::Objectspace.new(CensusApp, store: "file://#{dir}", trace: :objspace, logger: logger)
      expect(objspace.config.census).to be(false)
    ensure
      ObjectSpace.trace_object_allocations_stop
    end

    it "rejects bad values at boot, naming the option" do
      expect { Rack::Objectspace.new(CensusApp, store: {}, census: "maybe") }
        .to raise_error(ArgumentError, /census: must be true \(every allocation\), :sampled \(one in sample_rate:\) or false, got "maybe"/)
      expect { Rack::Objectspace.new(CensusApp, store: {}, census: true, trace: false) }
        .to raise_error(ArgumentError, /census: must be false unless trace: is true or :native/)
      expect { Rack::Objectspace.new(CensusApp, store: {}, census: :sampled, sample_rate: 0) }
        .to raise_error(ArgumentError, /sample_rate: must be an Integer in 1..1000000, got 0/)
      expect { Rack::Objectspace.new(CensusApp, store: {}, census: :sampled, sample_seed: -1) }
        .to raise_error(ArgumentError, /sample_seed: must be nil \(random\) or an Integer >= 0, got -1/)
      # Retained dumps keep objects by the generation the tracer recorded for each.
      expect { Rack::Objectspace.new(CensusApp, store: {}, census: :sampled, dump: :retained, every: 1, mode: :fork) }
        .to raise_error(ArgumentError, /census: must be true or false with dump: :retained and every: set/)
    end

    it "takes census: :sampled (or RACK_OBJECTSPACE_CENSUS=sampled) with its rate and seed" do
      sampled = Rack::Objectspace.new(CensusApp, store: {}, census: "sampled", sample_rate: "100", sample_seed: 7,
                                                 every: nil, logger: logger)
      expect(sampled.config).to have_attributes(census: :sampled, sample_rate: 100, sample_seed: 7)
      expect(Rack::Objectspace::Native::Tracer.sample_rate).to eq(100)
      default = Rack::Objectspace.new(CensusApp, store: {}, census: :sampled, every: nil, logger: logger)
      expect(default.config.sample_rate).to eq(Rack::Objectspace::Native::Tracer::DEFAULT_SAMPLE_RATE)
      # The exact census (the default) records every allocation again.
      Rack::Objectspace.new(CensusApp, store: {}, every: nil, logger: logger)
      expect(Rack::Objectspace::Native::Tracer.sample_rate).to eq(1)
    ensure
      Rack::Objectspace::Native::Tracer.sample(1, nil)
    end

    it "lets every: nil go without a token (the census alone), but not with census: false" do
      expect(Rack::Objectspace.new(CensusApp, store: {}, every: nil, logger: logger).config.every).to be_nil
      expect { Rack::Objectspace.new(CensusApp, store: {}, every: nil, census: false) }
        .to raise_error(ArgumentError, /every: must be a positive Integer when token: is not set and census: is off/)
    end
  end

  # The sampled census records one request in sample_rate, every allocation
  # its thread makes, and sets no allocation hook between such requests: Ruby
  # takes its slow allocation path whenever one is set (on 3.1, whenever any
  # GC hook is set too; on 3.3+ the census's GC hook stays on between them).
  describe "the sampled census" do
    it "records whole requests, one in sample_rate, and sets no allocation hook between them" do
      seen = []
      app = lambda do |_env|
        made = Array.new(3) { |i| "made #{i}" }
        hooks = TracePoint.stat.values.sum(&:first) # [active, deleted] by event: the active ones
        seen << [made, hooks]
        [200, {}, ["ok"]]
      end
      middleware = Rack::Objectspace.new(app, store: "file://#{dir}", every: nil, census: :sampled, sample_rate: 4,
                                              sample_seed: 3, logger: logger)
      request = Rack::MockRequest.new(middleware)
      400.times { |n| request.get("/#{n}") }
      recorded = seen.map { |made, _| made.map { |o| !Rack::Objectspace::Native::Tracer.site(o).nil? } }
      # Whole requests: all three of a request's objects recorded, or none.
      expect(recorded.map(&:uniq)).to all(satisfy { |r| r.size == 1 })
      sampled = recorded.map(&:first)
      expect(sampled.count(true)).to be_between(60, 140) # 100 expected: 1 in 4 of 400
      expect(Rack::Objectspace::Native::Tracer.stats[:windows]).to eq(sampled.count(true))
      # The allocation hook set while a sampled request is served, none while
      # another is: only the GC hook, where it costs allocations nothing.
      between = Rack::Objectspace::Native::Tracer::GC_VERDICTS ? 1 : 0
      hooks = seen.map(&:last)
      expect(hooks.zip(sampled).select { |_, s| s }.map(&:first)).to all(be > between)
      expect(hooks.zip(sampled).reject { |_, s| s }.map(&:first)).to all(eq(between))
      expect(TracePoint.stat.values.sum(&:first)).to eq(between)
    ensure
      Rack::Objectspace::Native::Tracer.sample(1, nil)
    end

    # Whether this request is not sampled: what it allocates is not recorded.
    def between_windows? = Rack::Objectspace::Native::Tracer.site(Object.new).nil?

    # Requests to `app` behind the sampled census, one in 2 recorded.
    def sampled_requests(app, seed:)
      Rack::MockRequest.new(Rack::Objectspace.new(app, store: "file://#{dir}", every: nil, census: :sampled,
                                                       sample_rate: 2, sample_seed: seed, logger: logger))
    end

    # Between windows no allocation is seen: a slot a GC freed can hold a new
    # object of the same type before the GC's reconciliation reads it.
    it "counts out a sampled request's garbage though its slots are reused before the reconciliation" do
      heap = Array.new(200_000) { |i| "heap #{i}" } # a lazy sweep that spans many allocations
      sampled = false
      refilled = counts = line = nil
      app = lambda do |env|
        case env["PATH_INFO"]
        when "/garbage"
          line = __LINE__ + 1
          made = Array.new(5_000) { |i| "garbage #{i}" }
          sampled = !Rack::Objectspace::Native::Tracer.site(made.last).nil?
        when "/refill"
          if between_windows?
            GC.start(immediate_sweep: false) # the garbage is found dead; its slots are freed as the app allocates
            refilled = Array.new(100_000) { |i| "refill #{i}" }
          end
        when "/count"
          if between_windows?
            GC.start
            counts = Rack::Objectspace::Native::Census.counts(__FILE__)
          end
        end
        [200, {}, ["ok"]]
      end
      request = sampled_requests(app, seed: 7)
      request.get("/garbage") until sampled
      request.get("/refill") until refilled
      request.get("/count") until counts
      expect(counts.find { |l, type, _, _| l == line && type == "STRING" }&.at(2).to_i).to eq(0)
      expect(refilled.size + heap.size).to eq(300_000)
    ensure
      Rack::Objectspace::Native::Tracer.sample(1, nil)
    end

    # A GC that begins in a sampled request is seen to begin; its sweep can
    # end after the window closes, unseen. The next GC no hook sees is
    # another GC: the request in flight at it is the one being served then.
    it "counts a sampled request's objects at a later GC no hook saw begin" do
      heap = Array.new(200_000) { |i| "heap #{i}" } # a sweep that takes many allocations to finish
      kept = []
      counts = nil
      line = nil
      app = lambda do |env|
        if env["PATH_INFO"] == "/count"
          if between_windows? # (a sampled request's own GC is seen)
            GC.start # full, swept at once
            counts = Rack::Objectspace::Native::Census.counts(__FILE__)
          end
        else
          line = __LINE__ + 1
          object = "kept #{kept.size}"
          if Rack::Objectspace::Native::Tracer.site(object) # a sampled request: its window is open
            kept << object
            GC.start(immediate_sweep: false) # begins in the window, sweeps after it
          end
        end
        [200, {}, ["ok"]]
      end
      request = sampled_requests(app, seed: 5)
      until counts
        size = kept.size
        request.get("/keep") while kept.size == size
        request.get("/count")
      end
      expect(counts.find { |l, type, _, _| l == line && type == "STRING" }&.at(2)).to eq(kept.size)
      expect(heap.size).to eq(200_000)
    ensure
      Rack::Objectspace::Native::Tracer.sample(1, nil)
    end
  end

  describe "the counts" do
    let(:native) { Rack::Objectspace::Native }

    # A request begins, as the middleware's census begins one, for the owner
    # the examples give the native census (1: no Census object's id).
    def begin_request(path) = native::Census.request({ "REQUEST_METHOD" => "GET", "PATH_INFO" => path }, 1)

    before do
      Rack::Objectspace::Census.owner = nil # no middleware's thread takes these batches
      native::Census.own(1)
      ObjectSpace.trace_object_allocations_stop # objspace's own fields would win in dumps
      native::Census.enable
      native::Tracer.start
      native::Census.take_batch("h", Process.pid) # whatever earlier specs left
    end

    it "are exact for the objects alive at the last GC, and memsize comes from the walk" do
      line = __LINE__ + 1
      kept = Array.new(300) { |i| "kept #{i}" * 4 }
      GC.start
      alive_at_a = heap_count(native, line)
      begin_request("/a")
      native::Census.walk
      begin_request("/b")
      100.times { kept.pop } # (pop(100) would share, and keep, the buffer)
      GC.start
      alive_at_c = heap_count(native, line)
      begin_request("/c")
      lines = census_lines(native::Census.take_batch("h", Process.pid)[1])
      site = lines.find { |l| l["file"] == __FILE__ && l["line"] == line && l["type"] == "STRING" }
      expect(site).not_to be_nil
      counts = lines.select { |l| l.key?("requests") }.to_h do |point|
        [point["endpoints"].first[1], point["counts"].find { |id, _, _| id == site["site"] }]
      end
      # The heap's own count, not 300 and 200: Ruby marks the machine stack
      # conservatively, so a stale word there can keep a temporary String of
      # that line, or one just popped, through a GC. The census counts it too.
      expect(counts["/a"][1]).to eq(alive_at_a).and be_between(300, 303)
      expect(counts["/b"][2]).to be >= 300 * 41 # the walk: at least one slot and the 40-byte string each
      expect(counts["/c"][1]).to eq(alive_at_c).and be_between(200, 203)
      expect(kept.size).to eq(200)
    end

    # Strings allocated at one line, in a fresh Array that shares no buffer.
    # Nothing else is allocated there: an interpolated Integer would leave a
    # temporary String per object, and one kept by a stale machine-stack word
    # (Ruby marks the C stack conservatively) would count in both tallies.
    ALLOC_LINE = __LINE__ + 1
    def allocate_strings(n, tag) = Array.new(n) { tag.dup }

    def heap_count(native, at = ALLOC_LINE)
      ObjectSpace.each_object(String).count do |s|
        file, line, = native::Tracer.site(s)
        file == __FILE__ && line == at
      end
    end

    it "stay equal to the heap's own count through minor and major GCs (reconciled after each GC, no FREEOBJ hook)" do
      site_count = {}
      probes = []
      probe = lambda do |label|
        probes << [label, heap_count(native)]
        begin_request("/#{label}")
      end
      begin_request("/alloc")
      old = allocate_strings(400, "old")
      begin_request("/age")
      4.times { GC.start(full_mark: false) } # old from now on
      probe.("aged")
      young = allocate_strings(300, "young")
      old = Array.new(200) { |i| old[i] } # 200 old garbage: a minor GC keeps them
      young = Array.new(150) { |i| young[i] } # 150 young garbage: a minor GC frees them
      begin_request("/minor")
      GC.start(full_mark: false)
      probe.("after_minor")
      begin_request("/major")
      GC.start
      probe.("after_major")
      begin_request("/end")
      lines = census_lines(native::Census.take_batch("h", Process.pid)[1])
      site = lines.find { |l| l["file"] == __FILE__ && l["line"] == ALLOC_LINE && l["type"] == "STRING" }
      lines.select { |l| l.key?("requests") }.each do |point|
        change = point["counts"].find { |id, _, _| id == site["site"] }
        site_count[:now] = change[1] if change
        site_count[point["endpoints"].first[1]] = site_count[:now]
      end
      census = probes.to_h { |label, _| [label, site_count["/#{label}"]] }
      expect(census).to eq(probes.to_h)
      expect(probes.map(&:last)).to eq([400, 200 + 150 + 200, 200 + 150])
      expect([old.size, young.size]).to eq([200, 150])
    end

    it "gives each object the number of the request that allocated it, in dumps too" do
      n = begin_request("/x")
      line = __LINE__ + 1
      object = +"allocated during request #{n}"
      expect(native::Tracer.request_of(object)).to eq(n)
      pipeline = native::Pipeline.new(redact: true, gzip_level: 1, sites: true, since: nil)
      io = IO.for_fd(pipeline.write_fd, autoclose: true)
      ObjectSpace.dump_all(output: io)
      io.close
      address = JSON.parse(ObjectSpace.dump(object))["address"]
      dump = pipeline.finish("{}")
      record = Zlib::GzipReader.new(StringIO.new(dump.take_bytes)).each_line.map { |l| JSON.parse(l) }
                               .find { |r| r["address"] == address }
      expect(record).to include("request" => n, "line" => line)
    end
  end

  describe "leaks from the census" do
    # In a fresh process, as a server would be (no state from other specs).
    # Defaults (the census asks for a dump: auto_dump), a dump after every
    # request (most dropped by max_children: 2), and the census alone.
    [{}, { every: 1 }, { auto_dump: false }].each do |options|
      it "ranks the leaking line first and leaves the bounded cache out, after a burst of 300 (#{options.inspect})" do
        script = File.expand_path("../fixtures/census_app.rb", __dir__)
        out = IO.popen([RbConfig.ruby, script, dir, JSON.generate(options), "300"], &:read)
        expect($?).to be_success
        stats = JSON.parse(out, symbolize_names: true)
        expect(stats[:census]).to include(requests: 300, points: 300, dropped: 0, dropped_points: 0, failed: 0)
        expect(stats[:census][:stored]).to be >= 1
        expect(census_files(dir)).not_to be_empty
        report = Rack::Objectspace::Analysis.leaks("file://#{dir}", top: 0)
        locations = report["sites"].map { |s| s["location"] }
        app = File.expand_path("../fixtures/census_app.rb", __dir__)
        expect(locations.first).to eq("#{app}:#{CensusApp::LEAK_LINE}"),
                                   "#{report['warnings']} #{report['sites'].first(3)}"
        expect(locations).not_to include("#{app}:#{CensusApp::CACHE_LINE}")
        expect(report["sites"].first["per_request"]).to be_within(0.1).of(1.0 / 3)
        expect(report["sites"].first["allocated_by"].map { |e| e["path"] }).to eq(["/profile"]), report["sites"].first.inspect
        # Counted by the heap walk at exit, after the last GC: all of the live ones.
        expect(report["sites"].first["allocated_by"].first["count"]).to eq(report["sites"].first["count"])
        # The header says what was read: the census, and a dump only where one
        # was read (for what holds the leak).
        text = Rack::Objectspace::Analysis::Text.render(report)
        # The newest dump of each process is the one read.
        read = options[:auto_dump] == false ? "census of 300 requests)" : "census of 300 requests, 1 dump(s) read for what holds them)"
        expect(text.lines.first).to end_with("(1 process(es), #{read}\n")
        expect(stats[:dumped]).to eq(0) if options[:auto_dump] == false
        if options.empty?
          # The census asked early (a site risen at 8 GCs), and once: the next may come 600 s later.
          expect(stats).to include(dumped: 1, stored: 1, dropped: 0)
          path = report["sites"].first["held_by"].first
          expect(path.map { |step| step["name"] }).to include("CensusApp")
          expect(path.last).to include("type" => "STRING", "line" => CensusApp::LEAK_LINE)
        end
        # How many GCs it saw is the process's line, not a warning: nothing went wrong.
        expect(report["warnings"]).to eq([])
        gcs = report["processes"].first["census_gcs"]
        expect(gcs).to be >= 4
        expect(text).to include("process #{Socket.gethostname}/").and include(": census of 300 requests, #{gcs} GCs observed")
      end
    end
  end

  describe "leaks from the census of an app whose GCs sweep lazily (as a Rails app's do)" do
    # A GC's counts are those of its start; its sweep can end hundreds of
    # requests later. Each observation must stand at the request the GC began in.
    it "places each GC's count at the request the GC began in, not where its sweep ended" do
      script = File.expand_path("../fixtures/census_lazy_app.rb", __dir__)
      out = IO.popen([RbConfig.ruby, script, dir, "3000"], &:read)
      expect($?).to be_success
      began = JSON.parse(out)
      expect(began.size).to be >= 3
      report = Rack::Objectspace::Analysis.leaks("file://#{dir}", top: 0)
      site = report["sites"].find { |s| s["location"] == "#{script}:#{CensusLazyApp::LEAK_LINE}" }
      expect(site).not_to be_nil, report["sites"].first(3).inspect
      # One String kept per request: a GC that began in request x counts x of
      # them, give or take the request in flight.
      steps = site["census_steps"].reject { |_x, count| count.zero? }
      expect(steps.size).to be >= 3
      expect(steps).to all(satisfy { |x, count| (x - count).abs <= 1 }),
                       "GCs began in requests #{began}; steps #{steps}"
      # The GC after the last request, its sweep unfinished when the process
      # flushed: the last step is its count (the last request's String aside:
      # the census counts a request's objects from the first GC after the next
      # request begins, and none did).
      expect(steps.last).to eq([3000, 2999])
      expect(site["per_request"]).to be_within(0.02).of(1.0)
    end
  end

  describe "requests" do
    def endpoints(store)
      store.keys.grep(/census-/).sort.flat_map { |key| census_lines(store[key]) }
           .select { |l| l.key?("requests") }.flat_map { |p| p["endpoints"] }
           .each_with_object(Hash.new(0)) { |(method, path, n), all| all[[method, path]] += n }
    end

    it "puts each request down to its endpoint: a mounted app's SCRIPT_NAME and PATH_INFO, as valid UTF-8" do
      store = {}
      middleware = Rack::Objectspace.new(CensusApp, store: store, every: nil, logger: logger)
      env = lambda do |method, script, path|
        Rack::MockRequest.env_for("/").merge("REQUEST_METHOD" => method, "SCRIPT_NAME" => script, "PATH_INFO" => path)
      end
      middleware.call(env.("GET", "/admin", "/users"))
      middleware.call(env.("POST", "", "/profile"))
      middleware.call(env.("GET", "", "/caf\xC3".b)) # cut in the middle of a character
      middleware.call(env.("GET", "/admin", "/users"))
      middleware.flush(30)
      expect(endpoints(store)).to eq(%w[GET /admin/users] => 2, %w[POST /profile] => 1, ["GET", "/caf\uFFFD"] => 1)
    end

    # Its counts hold only the allocations of the requests it recorded: the
    # endpoints its growth is fit to are theirs, and no other request's
    # endpoint is read (what every request pays, the most of it).
    it "in the sampled census, counts every request but the endpoints of those it recorded" do
      store = {}
      recorded = Hash.new(0)
      app = lambda do |env|
        recorded[env["PATH_INFO"]] += 1 unless Rack::Objectspace::Native::Tracer.site(Object.new).nil?
        [200, {}, ["ok"]]
      end
      middleware = Rack::Objectspace.new(app, store: store, every: nil, census: :sampled, sample_rate: 4,
                                              sample_seed: 5, logger: logger)
      request = Rack::MockRequest.new(middleware)
      200.times { |n| request.get(n.even? ? "/even" : "/odd") }
      expect(middleware.flush(30)[:census]).to include(requests: 200)
      expect(recorded.values.sum).to be_between(25, 75) # 50 expected: 1 in 4 of 200
      expect(endpoints(store)).to eq(recorded.to_h { |path, n| [["GET", path], n] })
    ensure
      Rack::Objectspace::Native::Tracer.sample(1, nil)
    end

    it "is counted by the census of the latest middleware to serve the process, which starts it over" do
      first = Rack::Objectspace.new(CensusApp, store: {}, every: nil, logger: logger)
      second = Rack::Objectspace.new(CensusApp, store: {}, every: nil, logger: logger)
      3.times { Rack::MockRequest.new(first).get("/home") }
      expect(first.stats[:census][:requests]).to eq(3)
      Rack::MockRequest.new(second).get("/home")
      expect(Rack::Objectspace::Census.owner).to be(second.instance_variable_get(:@census))
      expect(second.stats[:census][:requests]).to eq(1)
      2.times { Rack::MockRequest.new(first).get("/home") }
      expect(first.stats[:census][:requests]).to eq(2)
    ensure
      [first, second].each { |m| m&.flush(30) }
    end
  end

  describe "storage" do
    it "writes batches to a []= store through the dump queue, and counts drops when the queue is full" do
      store = {}
      middleware = Rack::Objectspace.new(CensusApp, store: store, every: nil, logger: logger)
      burst(middleware, 20)
      expect(middleware.flush(30)[:census]).to include(stored: 1, dropped: 0, requests: 20)
      key = store.keys.grep(/census-/).first
      expect(key).to match(%r{\A[^/]+/#{Process.pid}/census-000001\.ndjson\.gz\z}) # a new series per middleware
      points = census_lines(store[key]).select { |l| l.key?("requests") }
      # Every request counted once: those between two GCs share a point (its
      # endpoints count them), the last stands at its own, and at flush a point
      # closes the books at the last request.
      expect(points.sum { |p| p["endpoints"].sum(&:last) }).to eq(20)
      expect(points.map { |p| p["requests"] }.uniq.last(2)).to eq([19, 20])

      slow = Class.new(Hash) do
        def []=(key, value)
          sleep 0.3
          super
        end
      end.new
      middleware = Rack::Objectspace.new(CensusApp, store: slow, every: nil, queue_size: 1, logger: logger)
      3.times do
        burst(middleware, 2)
        middleware.flush(0) # a batch now; the store is still busy with the last
      end
      stats = middleware.flush(30)[:census]
      expect(stats[:dropped]).to be >= 1
      expect(stats[:stored] + stats[:dropped]).to eq(stats[:batches])
      expect(log.string).to include("event=census_dropped")
    end

    it "logs one line when the site table reaches its file cap (eval with unique names)" do
      middleware = Rack::Objectspace.new(CensusApp, store: {}, every: nil, logger: logger)
      burst(middleware, 1)
      (Rack::Objectspace::Native::Tracer::MAX_FILES + 10).times { |i| eval("'x'", binding, "(eval #{i})", 1) } # rubocop:disable Security/Eval
      burst(middleware, 1)
      middleware.flush(30)
      burst(middleware, 1)
      middleware.flush(30)
      stats = Rack::Objectspace::Native::Tracer.stats
      expect(stats).to include(file_cap: true, files: Rack::Objectspace::Native::Tracer::MAX_FILES + 1)
      expect(log.string.scan("event=site_table_capped").size).to eq(1)
    end
  end

  describe "the slot size check" do
    it "refuses to trace, with a message, where objects are not 40 bytes apart" do
      expect(Rack::Objectspace::Native::Tracer.refusal).to be_nil
      expect(Rack::Objectspace::Native::Tracer.check_slot_size(40)).to be_nil
      expect(Rack::Objectspace::Native::Tracer.check_slot_size(48)).to match(/tracing is off: .*40 bytes apart.*48/)
      expect(Rack::Objectspace::Native::Tracer.check_slot_size(nil)).to match(/\(none\)/)
    end
  end
end
