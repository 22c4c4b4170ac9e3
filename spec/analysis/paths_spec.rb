# frozen_string_literal: true

require "rack/objectspace/analysis"
require "rack/objectspace/analysis/text"
require "rack/objectspace/analysis/html"

# The leak of this spec: a module constant that keeps every request's events.
module PathsSpecAudit
  EVENTS = []
end

RSpec.describe "What holds the leak (held_by)" do
  include_context "a temporary folder"

  let(:leaky_app) do
    lambda do |env|
      5.times { |i| PathsSpecAudit::EVENTS << "audit event #{env['PATH_INFO']} #{i}" } # PATHS_LEAK
      [200, { "content-type" => "text/plain" }, ["ok"]]
    end
  end

  after { PathsSpecAudit::EVENTS.clear }

  it "names the module constant that holds a leak, from full dumps taken by the middleware" do
    app, middleware = linted(leaky_app, store: "file://#{path('dumps')}", mode: :inline, dump: :full, every: 1)
    4.times do |i|
      expect(Rack::MockRequest.new(app).get("/audit/#{i}").status).to eq(200)
      expect(middleware.flush(60)).to include(failed: 0)
    end
    report = Rack::Objectspace::Analysis.leaks(path("dumps"), top: 5)

    site = report["sites"].find { |s| s["location"] == line_of(__FILE__, "# PATHS_LEAK") && s["type"] == "STRING" }
    expect(site).not_to be_nil, report["sites"].map { |s| s["location"] }.inspect
    expect(site["held_by_sampled"]).to eq(20)
    expect(site["held_by_dump"]).to end_with(Dir[File.join(path("dumps"), "**", "*.jsonl.gz")].max.split("/").last)
    top = site["held_by"].first
    expect(top.first).to include("type" => "ROOT", "address" => nil)
    expect(top.first["name"]).to be_a(String)
    expect(top.last).to include("type" => "STRING", "class" => "String", "file" => __FILE__,
                                "line" => Integer(line_of(__FILE__, "# PATHS_LEAK").split(":").last))
    mod = top.find { |step| step["type"] == "MODULE" && step["name"] == "PathsSpecAudit" }
    expect(mod).not_to be_nil, top.inspect
    # EVENTS was allocated before tracing began: the module is the nearest named holder.
    expect(mod["holds"]).to eq(20)
    expect(mod["address"]).to match(/\A0x\h+\z/)
    # The holder that matters: EVENTS, the Array under the module, the last
    # object before the leaked Strings.
    expect(top[top.index(mod) + 1]).to include("type" => "ARRAY", "class" => "Array", "leak_holder" => true)
    expect(top.count { |step| step["leak_holder"] }).to eq(1)
    finding = report["findings"].find { |f| f["sites"].any? { |s| s["location"] == site["location"] } }
    expect(finding["holder"]).to include("objects" => 20)
    expect(finding["holder"]["within"]).to include("name" => "PathsSpecAudit")

    # The chain once, named by class and site, without addresses.
    text = Rack::Objectspace::Analysis::Text.render(report)
    expect(text).to include("What holds them", "20 held by Array in PathsSpecAudit (MODULE)",
                            "-> PathsSpecAudit (MODULE) -> Array -> String (paths_spec.rb:")
    expect(text[/^What holds them.*/m]).not_to match(/0x\h+/)
    sites = Rack::Objectspace::Analysis::Text.render(report, sites: true)
    expect(sites).to include("20 held by Array in PathsSpecAudit (MODULE)")
    html = Rack::Objectspace::Analysis::Html.render(report)
    expect(html).to include('<tr class="held">', "20 held by Array in PathsSpecAudit (MODULE)", "<b>Array</b>")
  end
end
