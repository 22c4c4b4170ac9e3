# frozen_string_literal: true

require_relative "../../examples/demo/run"

# bin/demo's app: /leak keeps a String the app allocates, /search keeps the
# query Hash rack parses for it, /cache fills a bounded cache, / makes garbage.
RSpec.describe "the demo app's leak hunt" do
  # Demo.run in a fresh process, as bin/demo runs it (the app's leaks and
  # cache are process-wide; the census starts with the process's first request).
  def demo(dir, **options)
    script = <<~RUBY
      require "json"
      require_relative #{File.expand_path('../../examples/demo/run', __dir__).inspect}
      report = Demo.run(dir: #{dir.inspect}, out: nil, **#{options.inspect})
      puts JSON.generate(report)
    RUBY
    out, err, status = Open3.capture3(RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script)
    expect(status).to be_success, err
    JSON.parse(out)
  end

  def finding(report, marker)
    report["findings"][Demo.found(report).fetch(marker) - 1]
  end

  it "finds both leaks on the defaults, names the app's line of the one rack allocates, and what holds them" do
    Dir.mktmpdir("demo") do |dir|
      report = demo(dir)
      expect(Demo.found(report)).to include(leak: Integer, search: Integer, cache: nil)

      leak = finding(report, :leak)
      expect(leak["headline"]).to include("location" => Demo.line_of("# the leak"), "type" => "STRING")
      expect(leak["allocated_by"].first).to include("method" => "GET", "path" => "/leak")
      expect(leak["per_request"]).to be_within(0.03).of(1.0 / 4)

      # rack's query parser allocates the Hash (and the Strings in it); the
      # line that keeps it is the app's, found from sampled stacks of the
      # objects still alive (/cache parses its query too, and drops it).
      search = finding(report, :search)
      expect(search["headline"]).to include("gem" => "rack", "type" => "HASH")
      expect(search["app_line"]).to include("location" => Demo.line_of("# the gem-allocated leak"))
      expect(search["app_line"]["samples"]).to eq(search["app_line"]["of"])
      expect(search["allocated_by"].first).to include("path" => "/search")

      # The census asked for one full dump (auto_dump): both are held by
      # constants of the Demo module.
      metas = Dir.glob("#{dir}/**/*.meta.json").map { |f| JSON.parse(File.read(f)) }
      expect(metas.map { |m| m.values_at("trigger", "dump") }).to eq([%w[census full]])
      [leak, search].each do |f|
        expect(f["holder"]["within"]).to include("type" => "MODULE", "name" => "Demo"), f["holder"].inspect
      end
    end
  end

  it "finds both leaks from the census alone (bin/demo --no-dumps)" do
    Dir.mktmpdir("demo-census") do |dir|
      report = demo(dir, auto_dump: false)
      expect(Dir.glob("**/*.jsonl.gz", base: dir)).to be_empty # no dump at all
      expect(Demo.found(report)).to include(leak: Integer, search: Integer, cache: nil)
      leak = finding(report, :leak)
      # Each leaked line is ~280 bytes of text in its own buffer: memsize comes
      # from the heap walk at exit, not the 40-byte slot alone.
      expect(leak["memsize"]).to be >= leak["count"] * 200
      expect(leak["holder"]).to be_nil
      expect(report["processes"].first).to include("census_requests" => 400, "dumps" => [])
    end
  end

  it "finds the app's leak from a retained dump of every request, as the original gem did (--every 1)" do
    # The cache is process-wide: another spec's Demo.run may have filled it,
    # and this one must see it fill during its own dumps.
    Demo::CACHE.clear
    Dir.mktmpdir("demo-every") do |dir|
      report = Demo.run(dir: dir, requests: 36, mode: :inline, every: 1, out: nil)
      expect(Demo.found(report)).to include(leak: Integer, cache: nil)
      expect(report["processes"].first["dumps"].size).to eq(36)

      # The cache did fill up: it is in the dumps, just not growing.
      cache = Demo.line_of("# a bounded cache")
      last = Dir[File.join(dir, "**", "*.jsonl.gz")].max
      cached = Rack::Objectspace::Analysis.summary(last, top: 0)["sites"].select { |s| s["location"] == cache }
      expect(cached.sum { |s| s["count"] }).to be >= Demo::CACHE_SIZE
    end
  end

  it "finds both leaks from the sampled census within 1,000 requests, whatever the seed, and never the cache" do
    rate = Rack::Objectspace::Native::Tracer::DEFAULT_SAMPLE_RATE
    (1..10).each do |seed|
      Dir.mktmpdir("demo-sampled") do |dir|
        # A fresh process each: the sampler's seed, the app's leaks and cache are process-wide.
        report = demo(dir, requests: 1000, auto_dump: false, census: :sampled, sample_seed: seed)
        found = Demo.found(report)
        # Both found, among the first 3: the search leak's two sites, estimated
        # apart, may be two findings.
        expect(found.values_at(:leak, :search)).to all(be_between(1, 3)), "seed #{seed}: #{found}"
        expect(found[:cache]).to be_nil, "seed #{seed}"
        expect(report["processes"].first).to include("census_sample" => rate)
        expect(report["warnings"]).to include(a_string_matching(/sampled census, 1 request in #{rate} recorded/))
      end
    end
  end
end
