# frozen_string_literal: true

require_relative "../../examples/demo/run"

RSpec.describe "the demo app's leak hunt" do
  it "ranks the leaking line first and does not rank the bounded cache" do
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
