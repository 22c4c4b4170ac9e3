# frozen_string_literal: true

require_relative "../../examples/demo/run"
require "rack/objectspace/analysis/html"
require_relative "../fixtures/census_app"

RSpec.describe "the HTML report" do
  it "is one self-contained page with charts, and Chromium renders it" do
    Dir.mktmpdir("html") do |dir|
      dumps = File.join(dir, "dumps")
      Demo.run(dir: dumps, requests: 30, mode: :inline, every: 1, out: nil) # a dump per request: its charts
      html = File.join(dir, "report.html")
      _out, err, status = cli("leaks", dumps, "--format", "html", "--output", html)
      expect(status).to eq(0), err

      page = File.read(html)
      expect(page.scan("<svg").size).to be >= 3 # objects, memsize, growing sites
      expect(page).to include("Live objects per request", "Memsize per request", "Top growing sites",
                              CGI.escapeHTML(Demo.line_of("# the leak")))
      # No network: nothing fetched from anywhere (the SVG namespace is a name, not a fetch).
      expect(page.gsub('xmlns="http://www.w3.org/2000/svg"', "")).not_to match(%r{https?://|<script|<link|<img}i)

      unless chromium
        skip_outside_ci "chromium is not installed (apt-get install -y chromium, or bin/setup); " \
                        "the page was checked statically only"
      end
      png = screenshot(html, File.join(dir, "report.png"))
      expect(png_size(png)).to eq([1200, 1600])
      expect(File.size(png)).to be > 20_000 # a blank page compresses to a few kB
      FileUtils.mkdir_p(File.join(AnalysisHelpers::ROOT, "tmp"))
      FileUtils.cp(png, File.join(AnalysisHelpers::ROOT, "tmp", "html-report-screenshot.png"))
    end
  end
end

RSpec.describe "the HTML report of a census" do
  # The series each census chart carries, by its data-* attributes (the
  # drawn points are pixels; these are the values).
  def census_charts(page)
    page.scan(%r{<div class="charts census"([^>]*)>(.*?)</svg>}m).map do |attrs, svg|
      a = attrs.scan(/data-([\w-]+)="([^"]*)"/).to_h
      lines = svg.scan(/<polyline [^>]*>/).map do |line|
        d = line.scan(/data-([\w-]+)="([^"]*)"/).to_h.transform_values { |v| CGI.unescapeHTML(v) }
        { site: d["site"], requests: d["requests"].split.map(&:to_i), objects: d["objects"].split.map(&:to_i) }
      end
      { host: a["host"], pid: a["pid"].to_i, last: a["last-request"].to_i, downsampled: a["downsampled"], lines: lines }
    end
  end

  it "charts the live objects of the top sites at every request, one line a site, from the report's census" do
    Dir.mktmpdir("html-census") do |dir|
      store = File.join(dir, "store")
      script = File.join(AnalysisHelpers::ROOT, "spec/fixtures/census_app.rb")
      # No dump at all: the census alone, one GC a request.
      _out, err, status = Open3.capture3(RbConfig.ruby, script, store, '{"every":null}', "150")
      expect(status).to be_success, err
      json, err, status = cli("leaks", store, "--format", "json", "--top", "0")
      expect(status).to eq(0), err
      report = JSON.parse(json)
      html = File.join(dir, "report.html")
      _out, err, status = cli("leaks", store, "--format", "html", "--top", "0", "--output", html)
      expect(status).to eq(0), err
      page = File.read(html)

      charts = census_charts(page)
      expect(charts.size).to eq(1)
      chart = charts.first
      process = report["processes"].first
      expect(chart).to include(host: process["host"], pid: process["pid"], last: 150, downsampled: "false")
      expect(process["census_requests"]).to eq(150)
      top = report["sites"].first(6)
      expect(chart[:lines].map { |l| l[:site] }).to eq(top.map { |s| "#{s['location']} #{s['type']}" })
      chart[:lines].zip(top).each do |line, site|
        expect(line[:requests].zip(line[:objects])).to eq(site["census_steps"])
      end
      leak = chart[:lines].first
      expect(leak[:site]).to start_with("#{script}:#{CensusApp::LEAK_LINE} ")
      # A step at every GC that changed the leak's count, all through the 150 requests.
      expect(leak[:requests].size).to be >= 30
      expect(leak[:requests]).to eq(leak[:requests].sort.uniq)
      expect(leak[:requests].first).to be <= 10
      expect(leak[:requests].last).to be_between(130, 150)
      expect(leak[:objects]).to eq(leak[:objects].sort)
      expect(leak[:objects].last).to eq(report["sites"].first["count"])
      expect(leak[:objects].last).to be > 30
      expect(page).to include("Census: live objects of the top sites over requests", "Every request of this process")
      expect(page).not_to include("are downsampled")
      expect(page.gsub('xmlns="http://www.w3.org/2000/svg"', "")).not_to match(%r{https?://|<script|<link|<img}i)
    end
  end

  it "keeps a long session's page small: min and max per bucket of requests, and says so" do
    # A census of 2 million requests, a GC every 20: 100,000 steps a site,
    # with one spike and one dip that must survive.
    steps = (1..100_000).map { |k| [k * 20, 1000 + k / 10] }
    steps[31_337][1] = 999_999
    steps[77_777][1] = 3
    report = {
      "command" => "leaks", "source" => "s3://bucket/census", "warnings" => [],
      "processes" => [{ "host" => "web-1", "pid" => 7, "dumps" => [], "census_requests" => 2_000_005 }],
      "sites" => Array.new(6) do |i|
        { "host" => "web-1", "pid" => 7, "location" => "app/models/x.rb:#{i + 1}", "type" => "STRING",
          "count" => steps.last[1], "memsize" => 0, "per_request" => 0.005, "growth" => 5000,
          "census_steps" => steps, "series" => [], "allocated_by" => [] }
      end
    }
    page = Rack::Objectspace::Analysis::Html.render(report)
    expect(page.bytesize).to be < 1_000_000
    chart = census_charts(page).first
    expect(chart).to include(downsampled: "true", last: 2_000_005)
    expect(chart[:lines].size).to eq(6)
    line = chart[:lines].first
    expect(line[:requests].size).to be_between(1000, 2 * Rack::Objectspace::Analysis::Html::CENSUS_BUCKETS)
    expect(line[:requests]).to eq(line[:requests].sort)
    expect(line[:objects].max).to eq(999_999)
    expect(line[:objects].min).to eq(3)
    expect(line[:requests].first).to eq(20)
    expect(line[:objects].last).to eq(steps.last[1])
    expect(page).to include("downsampled: the lowest and the highest count of each of 1,000 equal spans of requests")
  end
end
