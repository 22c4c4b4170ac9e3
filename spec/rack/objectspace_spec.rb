# frozen_string_literal: true

require "securerandom"
require "weakref"

# Objects this app keeps forever: one Array per request, allocated on LEAK_LINE.
KEPT_FOREVER = [] # rubocop:disable Style/MutableConstant
LEAK_LINE = __LINE__ + 4
GARBAGE_LINE = __LINE__ + 4
BODY_LINE = __LINE__ + 4
LEAKY_APP = lambda do |env|
  KEPT_FOREVER << Array.new(3) { |i| i } if env["PATH_INFO"].start_with?("/leak")
  # Garbage: allocated each request, unreachable once the request ends.
  20.times.map { |i| Array.new(2, i) }.size
  [200, { "Content-Type" => "text/plain" }, [+"ok #{env['PATH_INFO']}"]]
end

RSpec.describe Rack::Objectspace do
  let(:dir) { Dir.mktmpdir("objectspace-spec") }
  after { FileUtils.rm_rf(dir) }

  def dumps_in(dir)
    files_under(dir).select { |f| f.end_with?(".jsonl.gz") }.map { |f| File.binread(File.join(dir, f)) }
  end

  # Objects (not the IMEMO inline caches of the first call) allocated at this file's line.
  def count_at(records, line)
    records.count { |r| r["line"] == line && r["file"] == __FILE__ && r["type"] != "IMEMO" }
  end

  describe "responses" do
    %i[fork inline].each do |mode|
      it "returns the app's response unchanged in #{mode} mode" do
        app, middleware = linted(LEAKY_APP, store: "file://#{dir}", mode: mode)
        response = Rack::MockRequest.new(app).get("/hello?x=1")
        expect([response.status, response.body, response.headers["Content-Type"]]).to eq([200, "ok /hello", "text/plain"])
        expect(middleware.flush(30)).to include(dumped: 1, stored: 1, failed: 0)
      end
    end

    it "never swallows the app's own exceptions, and takes no dump for them" do
      app, middleware = linted(->(_env) { raise "boom" }, store: {}, mode: :inline)
      expect { Rack::MockRequest.new(app).get("/") }.to raise_error(RuntimeError, "boom")
      expect(middleware.flush(5)[:dumped]).to eq(0)
    end

    it "serves the request when the dump itself fails, and counts the failure" do
      store = Object.new
      def store.[]=(_key, _value)
        raise IOError, "disk on fire"
      end
      app, middleware = linted(LEAKY_APP, store: store, mode: :inline)
      3.times { expect(Rack::MockRequest.new(app).get("/x").status).to eq(200) }
      expect(middleware.flush(10)).to include(dumped: 3, stored: 0, failed: 3)
      expect(logged.scan("event=store_failed").size).to eq(1) # once per burst, not per request
      expect(logged).to include("disk on fire")
    end
  end

  describe "its own footprint" do
    # The exit hooks registered on the first request hold the dumper and the
    # census, never the middleware: not the app (nor what the app holds), not
    # the env of the request that registered them.
    it "lets go of the app and of the first request's env once the middleware is gone" do
      refs = Array.new(8) do |i|
        app = ->(_env) { [200, {}, ["ok"]] }
        env = Rack::MockRequest.env_for("/first/#{i}")
        described_class.new(app, store: {}, every: nil, logger: quiet_logger).call(env)
        [WeakRef.new(app), WeakRef.new(env)]
      end
      3.times { GC.start(full_mark: true, immediate_sweep: true) }
      alive = refs.sum { |pair| pair.count(&:weakref_alive?) }
      # A conservative GC may keep one or two alive from a stale stack slot; a leak keeps all 16.
      expect(alive).to be <= 2
    end
  end

  describe "options" do
    {
      { mode: :thread } => /mode: must be one of :fork, :inline, got :thread/,
      { dump: :partial } => /dump: must be one of :full, :retained, got :partial/,
      { every: 0 } => /every: must be a positive Integer.*got 0/,
      { every: "x" } => /every: .*got "x"/,
      { gc: "maybe" } => /gc: must be true or false, got "maybe"/,
      { redact: nil.to_a } => /redact: must be true or false/,
      { gzip_level: 10 } => /gzip_level: must be an Integer in 0..9, got 10/,
      { max_children: 0 } => /max_children: must be an Integer in 1..64, got 0/,
      { queue_size: -1 } => /queue_size: .*got -1/,
      { token: "short" } => /token: must be a secret String of at least 16 bytes.*got "5-byte String"/,
      { paths: ["admin"] } => %r{paths: must be path prefixes \(Strings starting with "/"\) or Regexps, got "admin"},
      { paths: [nil] } => /paths: must be path prefixes .* or Regexps, got nil/,
      { paths: false } => /paths: must be path prefixes .* or Regexps, got false/,
      { filter: "yes" } => /filter: must be nil or a callable/,
      { store: Object.new } => /store: must be a store URL .* or an object responding to \[\]=/,
      { store: "ftp://example.com/x" } => /invalid store URL "ftp:\/\/example.com\/x".*expected one of file:\/\//,
      { store: "file://" } => /no folder given/,
      { store: "file:///tmp", layout: :object } => /layout: must be :dump for URL stores/,
      { flush_timeout: -1 } => /flush_timeout: must be a number of seconds >= 0, got -1/,
      { logger: "stdout" } => /logger: must be nil or a Logger/,
      { every: nil, census: false } => /every: must be a positive Integer when token: is not set/,
      { trace: :fast } => /trace: must be one of true, false, :native, :objspace, got :fast/,
      { dump: :retained, trace: false } => /trace: must be true, :native or :objspace with dump: :retained .*got false/
    }.each do |options, message|
      it "rejects #{options.inspect} at boot with a message naming it" do
        options = { store: {} }.merge(options)
        expect { described_class.new(LEAKY_APP, **options) }.to raise_error(ArgumentError, message)
      end
    end

    it "rejects unknown options, naming them and the options it takes" do
      expect { described_class.new(LEAKY_APP, store: {}, evry: 2) }
        .to raise_error(ArgumentError, /unknown keyword: :evry; Rack::Objectspace takes store:, .* every:, /)
    end

    it "takes options from RACK_OBJECTSPACE_* variables when no keyword is given" do
      ENV["RACK_OBJECTSPACE_MODE"] = "inline"
      ENV["RACK_OBJECTSPACE_EVERY"] = "3"
      middleware = described_class.new(LEAKY_APP, store: {})
      expect([middleware.config.mode, middleware.config.every]).to eq([:inline, 3])
      ENV["RACK_OBJECTSPACE_MODE"] = "sideways"
      expect { described_class.new(LEAKY_APP, store: {}) }.to raise_error(ArgumentError, /mode: .*got "sideways"/)
    ensure
      ENV.delete("RACK_OBJECTSPACE_MODE")
      ENV.delete("RACK_OBJECTSPACE_EVERY")
    end

    it "dumps every Nth request, only matching paths and filters" do
      store = {}
      app, middleware = linted(LEAKY_APP, store: store, mode: :inline, every: 2, paths: ["/api", %r{\A/v\d}],
                                          filter: ->(env) { env["HTTP_X_SKIP"].nil? })
      request = Rack::MockRequest.new(app)
      # Candidates: /api/1 (1st, dumped), /api/2, /api/3 (3rd, dumped), /v2/x, /api/4 (5th, dumped).
      %w[/api/1 /api/2 /api/3 /v2/x /other /api/4].each { |path| request.get(path) }
      request.get("/api/5", "HTTP_X_SKIP" => "1")
      middleware.flush(10)
      expect(store.keys.grep(/jsonl\.gz\z/).map { |k| k[/GET-(\w+)-/, 1] }.sort).to eq(%w[api_1 api_3 api_4])
    end
  end

  describe "stores" do
    %i[fork inline].each do |mode|
      it "writes dumps and metadata to a Hash in #{mode} mode" do
        store = {}
        app, middleware = linted(LEAKY_APP, store: store, mode: mode)
        request = Rack::MockRequest.new(app)
        2.times { request.post("/orders/7") && middleware.flush(30) }
        expect(middleware.stats).to include(dumped: 2, stored: 2, failed: 0, dropped: 0, pending: 0)
        dump_keys = store.keys.grep(/\.jsonl\.gz\z/).sort
        host = Socket.gethostname.gsub(/[^A-Za-z0-9.-]+/, "_")
        expect(dump_keys).to all(match(%r{\A#{Regexp.escape(host)}/#{Process.pid}/00000[12]-\d{13}-POST-orders_7-\h{8}\.jsonl\.gz\z}))
        meta = JSON.parse(store[dump_keys.first.sub(".jsonl.gz", ".meta.json")])
        expect(meta).to include("pid" => Process.pid, "seq" => 1, "dump" => "full", "mode" => mode.to_s,
                                "request" => { "method" => "POST", "path" => "/orders/7", "status" => 200 })
        expect(meta["types"]["STRING"]["count"]).to be > 1000
        heap = records(store[dump_keys.first])
        expect(heap.size).to eq(meta["lines"])
        expect(heap.map { |r| r["type"] }).to include("ROOT", "STRING", "CLASS")
        # Allocation tracing is on: dumps carry file, line and generation.
        expect(heap.find { |r| r["file"] && r["line"] && r["generation"] }).not_to be_nil
      end

      it "round-trips through a file:// store in #{mode} mode" do
        app, middleware = linted(LEAKY_APP, store: "file://#{dir}/dumps", mode: mode)
        Rack::MockRequest.new(app).get("/round/trip")
        expect(middleware.flush(30)).to include(stored: 1)
        files = files_under("#{dir}/dumps")
        expect(files.size).to eq(2)
        dump = File.binread(File.join(dir, "dumps", files.find { |f| f.end_with?(".jsonl.gz") }))
        meta = JSON.parse(File.read(File.join(dir, "dumps", files.find { |f| f.end_with?(".meta.json") })))
        expect(records(dump).size).to eq(meta["lines"])
        expect(meta["stored_bytes"]).to eq(dump.bytesize)
      end
    end

    it "writes into the memory:// store of this process in both modes" do
      %i[inline fork].each do |mode|
        middleware = described_class.new(LEAKY_APP, store: "memory://spec-#{mode}", mode: mode, every: 1, logger: quiet_logger)
        Rack::MockRequest.new(middleware).get("/m")
        expect(middleware.flush(30)).to include(stored: 1, failed: 0)
      end
    end

    it "writes one record per object with layout: :object" do
      store = {}
      middleware = described_class.new(LEAKY_APP, store: store, mode: :inline, dump: :retained, layout: :object,
                                                  every: 1, logger: quiet_logger)
      Rack::MockRequest.new(middleware).get("/leak")
      middleware.flush(10)
      dump_key = store.keys.find { |k| k.end_with?(".meta.json") }.sub(".meta.json", ".jsonl.gz")
      objects = store.select { |k, _| k.start_with?("#{dump_key}/") }
      expect(objects).not_to be_empty
      address, line = objects.find { |k, _| k.include?("/0x") }
      expect(JSON.parse(line)["address"]).to eq(address.split("/").last)
    end
  end

  describe "what a dump holds" do
    # trace: true is :objspace for inline retained dumps, :native otherwise.
    [[:inline, true], [:fork, true], [:inline, :native], [:fork, :objspace]].each do |mode, trace|
      it "in :retained #{mode} dumps (trace: #{trace.inspect}), kept objects accumulate and garbage or responses do not" do
        KEPT_FOREVER.clear
        # A retained dump keeps what is alive of everything allocated since the
        # GC before its first dumped request: without this GC, what the
        # examples before left since the last one (RSpec keeps their results)
        # counts too, 950 to 5,057 objects as the order and the code allocate.
        GC.start
        store = {}
        middleware = described_class.new(LEAKY_APP, store: store, mode: mode, dump: :retained, trace: trace,
                                                    every: 1, logger: quiet_logger)
        request = Rack::MockRequest.new(middleware)
        5.times do |i|
          request.get("/leak/#{i}")
          middleware.flush(30)
        end
        dumps = store.keys.grep(/\.jsonl\.gz\z/).sort.map { |k| records(store[k]) }
        expect(dumps.size).to eq(5)
        if middleware.config.trace == :native
          # Classes from before the baseline come by name only, so every kept object's class is named.
          names = dumps.last.select { |r| r["before_baseline"] }.to_h { |r| [r["address"], r["name"]] }
          leaked = dumps.last.find { |r| r["line"] == LEAK_LINE && r["type"] == "ARRAY" }
          expect(names[leaked["class"]]).to eq("Array")
          dumps = dumps.map { |d| d.reject { |r| r["before_baseline"] } }
        end
        kept = dumps.map { |d| count_at(d, LEAK_LINE) }
        expect(kept).to eq([1, 2, 3, 4, 5])
        expect(dumps.map { |d| count_at(d, GARBAGE_LINE) }).to all(eq(0))
        # Each response is 4 objects of BODY_LINE (Array, Hash, body Array,
        # String): 20 if they accumulated. A few may be alive at a dump: the
        # current response's, and one a stale machine-stack word keeps through
        # the dump's GC (Ruby marks that stack conservatively; seen once in a
        # full run on 3.4).
        expect(dumps.map { |d| count_at(d, BODY_LINE) }.max).to be <= 3
        # A retained dump is small: only what was allocated since the first dumped request.
        expect(dumps.last.size).to be < 5_000
        metas = store.keys.grep(/meta\.json\z/).sort.map { |k| JSON.parse(store[k]) }
        expect(metas.map { |m| m["baseline_generation"] }.uniq).to eq([metas.first["gc_generation"]])
        expect(metas.map { |m| m["gc_generation"] }).to eq(metas.map { |m| m["gc_generation"] }.sort)
      end
    end

    it "takes an inline dump into a String first while other threads run, on Ruby < 3.4 (it crashes streaming)" do
      busy = Thread.new { sleep }
      store = {}
      middleware = described_class.new(LEAKY_APP, store: store, mode: :inline, every: 1, logger: quiet_logger)
      Rack::MockRequest.new(middleware).get("/threads")
      expect(middleware.flush(10)).to include(stored: 1)
      meta = JSON.parse(store.find { |k, _| k.end_with?(".meta.json") }[1])
      # Ruby 3.4 streams safely with threads alive (dumper.rb's SWITCH_SAFE_IO): no String there.
      buffered = Gem::Version.new(RUBY_VERSION) < Gem::Version.new("3.4") ? true : nil
      expect(meta["buffered"]).to be(buffered)
      expect(records(store.find { |k, _| k.end_with?(".jsonl.gz") }[1]).size).to eq(meta["lines"])
    ensure
      busy&.kill
    end

    it "in :full dumps, holds the whole heap" do
      store = {}
      middleware = described_class.new(LEAKY_APP, store: store, mode: :inline, dump: :full, every: 1, logger: quiet_logger)
      Rack::MockRequest.new(middleware).get("/x")
      middleware.flush(10)
      heap = records(store[store.keys.grep(/jsonl\.gz\z/).first])
      expect(heap.size).to be > 10_000
      expect(heap.count { |r| r["type"] == "CLASS" && r["name"] == "Rack::Objectspace" }).to eq(1)
    end
  end

  describe "secrets" do
    SECRET = "s3cr3t-#{SecureRandom.hex(12)}".freeze
    HOLDER = [] # rubocop:disable Style/MutableConstant
    SECRET_APP = lambda do |env|
      HOLDER << "token=#{SECRET}" << SECRET.dup
      [200, { "Content-Type" => "text/plain" }, [SECRET.dup]]
    end

    def stored_text(store_or_dir)
      blobs = store_or_dir.is_a?(Hash) ? store_or_dir.values : files_under(store_or_dir).map { |f| File.binread(File.join(store_or_dir, f)) }
      blobs.map { |b| b.start_with?("\x1f\x8b".b) ? gunzip(b) : b }.join("\n")
    end

    %i[fork inline].each do |mode|
      it "never stores a string value under default options (#{mode}, Hash and file://)" do
        [{}, "#{dir}/#{mode}"].each do |store|
          middleware = described_class.new(SECRET_APP, store: store.is_a?(String) ? "file://#{store}" : store,
                                                       mode: mode, every: 1, logger: quiet_logger)
          Rack::MockRequest.new(middleware).get("/login?password=#{SECRET}")
          expect(middleware.flush(30)).to include(stored: 1)
          text = stored_text(store)
          expect(text).to include("\"bytesize\":#{SECRET.bytesize}")
          expect(text).not_to include(SECRET)
          expect(text).not_to include("\"value\":")
        end
      end
    end

    it "stores string values only when redaction is turned off" do
      store = {}
      middleware = described_class.new(SECRET_APP, store: store, mode: :inline, redact: false, every: 1, logger: quiet_logger)
      Rack::MockRequest.new(middleware).get("/")
      middleware.flush(10)
      expect(stored_text(store)).to include(SECRET)
    end
  end

  describe "hostile paths" do
    ["/../../x", "/..", "/x\0/../../etc", "/#{'a' * 20_000}", "/ünïcødé/☃/..", "//etc/passwd", "/%2e%2e/%2f"].each do |path|
      it "keeps #{path[0, 30].inspect} inside the store with a short key" do
        root = File.join(dir, "store")
        middleware = described_class.new(LEAKY_APP, store: "file://#{root}", mode: :inline, gc: false, every: 1, logger: quiet_logger)
        env = Rack::MockRequest.env_for("/")
        env["PATH_INFO"] = path.dup.force_encoding(Encoding::BINARY)
        status, _headers, body = middleware.call(env)
        body.close
        expect(status).to eq(200)
        expect(middleware.flush(10)).to include(stored: 1)
        files = files_under(root)
        expect(files.size).to eq(2)
        expect(Dir.glob("#{dir}/**/*", File::FNM_DOTMATCH).reject { |f| f.start_with?(root) || File.directory?(f) }).to be_empty
        files.each do |file|
          expect(file.bytesize).to be < 300
          expect(file.count("/")).to eq(2)
          expect(file).not_to include("..")
          expect(File.realpath(File.join(root, file))).to start_with(File.realpath(root))
        end
      end
    end
  end

  describe "fork mode" do
    it "leaves no zombies and drops dumps beyond max_children" do
      store = {}
      middleware = described_class.new(LEAKY_APP, store: store, mode: :fork, max_children: 1, every: 1, logger: quiet_logger)
      request = Rack::MockRequest.new(middleware)
      5.times { request.get("/burst") }
      stats = middleware.flush(30)
      expect(stats[:dumped] + stats[:dropped]).to eq(5)
      expect(stats[:dropped]).to be >= 1
      expect(stats[:stored]).to eq(stats[:dumped])
      expect { Process.wait(-1, Process::WNOHANG) }.to raise_error(Errno::ECHILD)
    end

    # One object can be bigger than the pipeline's 4 MiB buffer (a file read
    # into a String, a huge Array). Its record streams through like the rest:
    # the child's peak grows by a fraction of it, and it round-trips.
    context "with a record larger than the pipeline's buffer" do
      big_value = ("0123456789abcdef" * 4).freeze
      [[:string, -> { (big_value * 1_000_000).force_encoding("BINARY") }],
       [:array, -> { Array.new(2_000_000, big_value) }]].each do |kind, make|
        [true, false].each do |redact|
          it "streams a #{kind} record in a fork child (redact: #{redact}) and stores it whole" do
            skip "needs /proc/self/clear_refs" unless File.exist?("/proc/self/clear_refs")
            payload = make.call
            app, middleware = linted(holder_app(payload), store: "file://#{dir}", mode: :fork, redact: redact,
                                                          gc: false)
            expect(serve_statuses(app, 1)).to eq([200])
            expect(middleware.flush(120)).to include(stored: 1, failed: 0)
            meta_file = files_under(dir).find { |f| f.end_with?(".meta.json") }
            meta = JSON.parse(File.read(File.join(dir, meta_file)))
            expect(meta["child_peak_rss_growth_kb"] * 1024).to be < 24 * 1024 * 1024, meta.inspect

            marker = kind == :string ? "\"bytesize\":#{payload.bytesize}," : "\"length\":#{payload.size},"
            record = nil
            Zlib::GzipReader.open(File.join(dir, meta_file.sub(".meta.json", ".jsonl.gz"))) do |gz|
              gz.each_line do |line|
                next unless line.include?(marker)

                record = JSON.parse(line)
                break
              end
            end
            expect(record).not_to be_nil, "no record with #{marker} in the dump"
            if kind == :string
              expect(record).to include("type" => "STRING", "bytesize" => payload.bytesize)
              redact ? expect(record).not_to(include("value")) : expect(record["value"]).to(eq(payload))
            else
              expect(record).to include("type" => "ARRAY", "length" => payload.size)
              expect(record["references"].size).to be >= 1
            end
            expect(record).to include("memsize")
          end
        end
      end
    end
  end
end
