# frozen_string_literal: true

require "moneta"
require "redis"
require "rack/objectspace/analysis"
require "open3"
require_relative "../fixtures/census_app"

# Every store the middleware writes to can be read back: redis:// URLs by the
# CLI (through Moneta, as `store: Moneta.new(:Redis)` wrote them), any Ruby
# store (`[]` and `each_key` or `keys`) by the Ruby API, in both layouts.
RSpec.describe "reading dumps back from every store" do
  # One leaked String per /leak request, kept for ever; /ok allocates nothing that lives.
  class LeakyApp # rubocop:disable Lint/ConstantDefinitionInBlock
    LOG = []

    def call(env)
      LOG << "audit #{env['PATH_INFO']}".dup if env["PATH_INFO"].start_with?("/leak") # the leak
      [200, { "Content-Type" => "text/plain" }, ["ok"]]
    end
  end

  STORES_LEAK_LINE = "#{__FILE__}:#{File.readlines(__FILE__).index { |l| l.include?('# the leak') } + 1}" # rubocop:disable Lint/ConstantDefinitionInBlock

  # Serves n requests (/leak and /ok in turn), waiting for each dump, so none is dropped.
  # Dumps only: a census would be read back too, and win over the dumps (as in a file:// store).
  def serve_session(store, n, **options)
    app, middleware = linted(LeakyApp.new, store: store, dump: :retained, max_children: 1, census: false, **options)
    n.times do |i|
      expect(Rack::MockRequest.new(app).get(i.even? ? "/leak/#{i}" : "/ok/#{i}").status).to eq(200)
      middleware.flush(60)
    end
    expect(middleware.stats).to include(stored: n, dropped: 0, failed: 0)
  end

  context "with a real redis-server" do
    before(:all) do
      @redis = start_server!(:redis, name: "redis-readback")
      @url = "redis://127.0.0.1:#{@redis.port}/0"
    end

    after(:all) { @redis&.stop }

    before { Redis.new(url: @url).flushdb }

    %i[dump object].each do |layout|
      it "reads dumps the middleware wrote in fork mode with layout: :#{layout}: ls, leaks, diff and summary" do
        serve_session(Moneta.new(:Redis, url: @url), 12, mode: :fork, layout: layout)

        out, err, status = cli("ls", @url, "--format", "json")
        expect(status).to eq(0), err
        listing = JSON.parse(out)
        expect(listing["source"]).to eq(@url)
        expect(listing["dumps"].size).to eq(12)
        expect(listing["dumps"].map { |d| d["seq"] }).to eq((1..12).to_a)
        expect(listing["dumps"].map { |d| d["requests"] }).to eq((1..12).to_a)
        expect(listing["processes"]).to eq([{ "host" => Socket.gethostname, "pid" => Process.pid, "dumps" => 12,
                                              "missing_dumps" => 0 }])

        out, err, status = cli("leaks", @url, "--format", "json")
        expect(status).to eq(0), err
        report = JSON.parse(out)
        expect(report["sites"].first).to include("location" => STORES_LEAK_LINE, "type" => "STRING")
        expect(report["sites"].first["per_request"]).to be_within(0.1).of(0.5)

        # The keys `ls` prints are the arguments of diff and summary, against the same SOURCE.
        keys = listing["dumps"].map { |d| d["key"] }
        out, err, status = cli("diff", @url, keys[5], keys[7], keys[11])
        expect(status).to eq(0), err
        expect(out).to include(STORES_LEAK_LINE.sub("#{AnalysisHelpers::ROOT}/", ""))
        out, err, status = cli("summary", @url, keys.last, "--format", "json")
        expect(status).to eq(0), err
        expect(JSON.parse(out)["objects"]).to be > 0

        out, _err, status = cli("ls", @url)
        expect(status).to eq(0)
        expect(out).to include("12 dump(s) in #{@url}", "rack-objectspace diff #{@url} KEY1 KEY2 KEY3", keys.first)
      end
    end

    # The README's census-only setup with the README's Redis store: `leaks redis://...` reads
    # the census batches (census-NNNNNN.ndjson.gz keys), not only dumps.
    [{}, { every: nil }].each do |options|
      it "reads the census a fresh process stored in Moneta over Redis (#{options.inspect}): leaks and ls" do
        script = File.expand_path("../fixtures/census_app.rb", __dir__)
        out, err, status = Open3.capture3(RbConfig.ruby, script, @url, JSON.generate(options), "200")
        expect(status).to be_success, err
        expect(JSON.parse(out, symbolize_names: true)[:census]).to include(requests: 200, dropped: 0, failed: 0)

        out, err, status = cli("leaks", @url, "--format", "json", "--top", "0")
        expect(status).to eq(0), err
        report = JSON.parse(out)
        expect(report["processes"].map { |p| p["census_requests"] }).to eq([200]), report["processes"].inspect
        locations = report["sites"].map { |s| s["location"] }
        expect(locations.first).to eq("#{script}:#{CensusApp::LEAK_LINE}"), report["sites"].first(3).inspect
        expect(locations).not_to include("#{script}:#{CensusApp::CACHE_LINE}")
        expect(report["sites"].first["per_request"]).to be_within(0.1).of(1.0 / 3)

        out, err, status = cli("leaks", @url)
        expect(status).to eq(0), err
        expect(out).to include("census of 200 requests")
      end
    end

    it "says what went wrong for a key that is not there and for a Redis that is down" do
      serve_session(Moneta.new(:Redis, url: @url), 3, mode: :inline)
      _out, err, status = cli("summary", @url, "no/such/key.jsonl.gz")
      expect(status).to eq(1)
      expect(err).to include("no key \"no/such/key.jsonl.gz\"")

      down = "redis://127.0.0.1:#{TestServers.free_port}/0"
      _out, err, status = cli("leaks", down)
      expect(status).to eq(1)
      expect(err).to match(/rack-objectspace: .*(CannotConnect|ECONNREFUSED|connect)/i)
      expect(err).not_to include("from /") # no backtrace
    end
  end

  describe "the Ruby API on any []= store" do
    it "reads a Hash the middleware wrote to (inline mode, layout :dump) with leaks, ls, diff and summary" do
      store = {}
      serve_session(store, 12, mode: :inline)
      report = Rack::Objectspace::Analysis.leaks(store)
      expect(report["source"]).to eq("Hash")
      # (The Hash itself grows too: it holds every dump's metadata in this process.)
      expect(report["sites"].map { |s| s["location"] }).to include(STORES_LEAK_LINE)

      keys = Rack::Objectspace::Analysis.ls(store)["dumps"].map { |d| d["key"] }
      expect(keys.size).to eq(12)
      diff = Rack::Objectspace::Analysis.diff(store, keys[3], keys[6], keys[11])
      expect(diff["inputs"]).to eq([keys[3], keys[6], keys[11]])
      expect(diff["sites"].map { |s| s["location"] }).to include(STORES_LEAK_LINE)
      expect(Rack::Objectspace::Analysis.summary(store, keys.last)["objects"]).to be > 0
    end

    it "reads a store that has only [] and keys (no each_key), in the :object layout" do
      redis = start_server!(:redis, name: "redis-keys-only")
      moneta = Moneta.new(:Redis, url: "redis://127.0.0.1:#{redis.port}/0")
      serve_session(moneta, 10, mode: :fork, layout: :object)
      keys_only = Class.new do
        def initialize(moneta)
          @moneta = moneta
        end

        def [](key)
          @moneta[key]
        end

        def keys
          @moneta.each_key.to_a
        end
      end.new(moneta)
      report = Rack::Objectspace::Analysis.leaks(keys_only)
      expect(report["sites"].map { |s| s["location"] }).to include(STORES_LEAK_LINE)
      expect(report["processes"].first["dumps"].size).to eq(10)
    ensure
      redis&.stop
    end

    it "refuses an object that is not a store with a clear message" do
      expect { Rack::Objectspace::Analysis.leaks(Object.new) }
        .to raise_error(ArgumentError, /a store responding to \[\] and each_key or keys, got Object/)
    end
  end
end
