# frozen_string_literal: true

require_relative "../../examples/demo/run"

RSpec.describe "the demo app's leak hunt" do
  it "ranks the leaking line first and does not rank the bounded cache" do
    # The app's cache is process-wide: another spec's Demo.run may have filled
    # it, and this one must see it fill during its own dumps.
    Demo::CACHE.clear
    Dir.mktmpdir("demo") do |dir|
      report = Demo.run(dir: dir, requests: 36, mode: :inline, out: nil)
      leak = Demo.line_of("# the leak")
      cache = Demo.line_of("# a bounded cache")

      expect(report["sites"].first).to include("location" => leak, "type" => "STRING")
      expect(report["sites"].first["allocated_by"].first).to include("method" => "GET", "path" => "/leak")
      expect(report["sites"].first["per_request"]).to be_within(0.05).of(1.0 / 3)
      expect(report["sites"].map { |s| s["location"] }).not_to include(cache)
      expect(report["processes"].size).to eq(1)
      expect(report["processes"].first["dumps"].size).to eq(36)

      # The cache did fill up: it is in the dumps, just not growing.
      last = Dir[File.join(dir, "**", "*.jsonl.gz")].max
      cached = Rack::Objectspace::Analysis.summary(last, top: 0)["sites"].select { |s| s["location"] == cache }
      expect(cached.sum { |s| s["count"] }).to be >= Demo::CACHE_SIZE
    end
  end
end

RSpec.describe "the demo app's leak hunt with no dump (bin/demo --no-dumps)" do
  it "ranks the leaking line first from the census alone" do
    Dir.mktmpdir("demo-census") do |dir|
      # In a fresh process, as bin/demo runs it (the app's leak and cache are
      # process-wide; the census starts with the process's first request).
      script = <<~RUBY
        require "json"
        require_relative #{File.expand_path('../../examples/demo/run', __dir__).inspect}
        report = Demo.run(dir: #{dir.inspect}, requests: 300, every: nil, out: nil)
        puts JSON.generate(report)
      RUBY
      out, err, status = Open3.capture3(RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script)
      expect(status).to be_success, err
      report = JSON.parse(out)
      expect(Dir.glob("**/*.jsonl.gz", base: dir)).to be_empty # no dump at all
      expect(Dir.glob("**/census-*.ndjson.gz", base: dir)).not_to be_empty
      leak = report["sites"].first
      expect(leak).to include("location" => Demo.line_of("# the leak"), "type" => "STRING")
      expect(leak["allocated_by"].first).to include("method" => "GET", "path" => "/leak")
      # Each leaked line is ~280 bytes of text in its own buffer: memsize comes
      # from the heap walk at exit, not the 40-byte slot alone.
      expect(leak["memsize"]).to be >= leak["count"] * 200
      expect(report["sites"].map { |s| s["location"] }).not_to include(Demo.line_of("# a bounded cache"))
      expect(report["processes"].first).to include("census_requests" => 300, "dumps" => [])
    end
  end
end
