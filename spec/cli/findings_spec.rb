# frozen_string_literal: true

require "rack/objectspace/analysis/cli"

# One leak, one finding (issue 21): a Rack app with ActiveSupport whose
# GET /report subscribes to an event on every request and never unsubscribes.
# The subscriber, its Proc and the Rack env its block keeps grow on their own
# lines at the same pace: one leak, reported as one finding with its sites,
# its endpoints and (with a dump) the holder that matters.
RSpec.describe "leaks: one leak, one finding",
               debian_ruby_only: "ActiveSupport comes from Debian's ruby-activesupport, for Ruby 3.1 only" do
  include_context "a temporary folder"

  FINDINGS_APP = File.expand_path("../fixtures/notifications_app.rb", __dir__) # rubocop:disable Lint/ConstantDefinitionInBlock

  # A fresh process serving n requests into dir; its stats.
  def serve(dir, options, n)
    out, err, status = Open3.capture3(RbConfig.ruby, FINDINGS_APP, dir, JSON.generate(options), n.to_s)
    expect(status).to be_success, err
    JSON.parse(out)
  end

  def leaks_json(dir, *args)
    out, err, status = cli("leaks", dir, "--format", "json", *args)
    expect(status).to eq(0), err
    JSON.parse(out)
  end

  def leaks_text(dir, *args, columns: 100)
    out, err, status = Open3.capture3({ "COLUMNS" => columns.to_s }, RbConfig.ruby, AnalysisHelpers::EXE,
                                      "leaks", dir, *args, chdir: AnalysisHelpers::ROOT)
    expect(status.exitstatus).to eq(0), err
    out
  end

  it "reports the sites of a census-only session that grow together as one finding, the per-site view one flag away" do
    serve(@dir, { every: nil, auto_dump: false }, 600)
    report = leaks_json(@dir)
    sites = report["sites"]
    # The subscriber, its Proc and the env with its parts: several sites, one pace.
    expect(sites.size).to be >= 5
    expect(sites.map { |s| s["per_request"] }.minmax.map { |r| r.round(1) }.uniq.size).to eq(1)
    expect(report["growing_sites"]).to eq(sites.size)

    expect(report["findings"].size).to eq(1), report["findings"].map { |f| f["headline"]["location"] }.inspect
    leak = report["findings"].first
    key = ->(s) { [s["location"], s["type"], s["class"]] }
    expect(leak["sites"].map(&key)).to match_array(sites.map(&key))
    expect(leak["per_request"]).to be_within(0.01).of(sites.sum { |s| s["per_request"] })
    expect(leak["count"]).to eq(sites.sum { |s| s["count"] })
    expect(leak["memsize"]).to eq(sites.sum { |s| s["memsize"] })
    expect(leak["bytes_per_request"]).to be > 0
    # The app's own code heads it (the env the fixture's server builds), not the gem's fanout.
    expect(leak["headline"]).to include("gem" => "app")
    expect(leak["sites"].first).to include(leak["headline"])
    expect(leak["allocated_by"].first).to include("method" => "GET", "path" => "/report")
    expect(leak["holder"]).to be_nil # no dump: nothing to say what holds it

    text = leaks_text(@dir)
    expect(text.lines.first).to start_with("Leaks in #{@dir}: 1 leak(s) from #{sites.size} growing site(s) (")
    rows = text.lines.grep(/\A\s+\d+\s+\d+\.\d\d\s/)
    expect(rows.size).to eq(1), text
    expect(text).to include("#1 spec/fixtures/get_env.rb:", "the app's line", "#{sites.size - 1} more site(s) growing with it",
                            "activesupport/lib/active_support/notifications/fanout.rb:")
    expect(text.lines.map { |l| l.chomp.length }.max).to be <= 100

    per_site = leaks_text(@dir, "--sites")
    expect(per_site.lines.first).to start_with("Leaks in #{@dir}: #{sites.size} growing site(s) (")
    expect(per_site.lines.grep(/\A\s+\d+\s+\d+\.\d\d\s/).size).to eq(sites.size)
  end

  it "says what holds the leak on the defaults, with no dump by count: the census asks for one" do
    stats = serve(@dir, {}, 600)
    # One dump, when the census first saw a site keep growing; the next would be 600 s later.
    expect(stats).to include("dumped" => 1, "stored" => 1, "dropped" => 0)
    report = leaks_json(@dir)
    expect(report["findings"].size).to eq(1), report["findings"].map { |f| f["headline"]["location"] }.inspect
    holder = report["findings"].first["holder"]
    expect(holder).not_to be_nil, report["warnings"].inspect
    expect(holder["within"]).to include("type" => "MODULE", "name" => "ActiveSupport::Notifications")
    meta = Dir.glob("#{@dir}/**/*.meta.json").map { |f| JSON.parse(File.read(f)) }
    expect(meta.map { |m| m.values_at("trigger", "dump") }).to eq([%w[census full]])
  end

  it "names the holder that matters and each distinct path once, when a dump says what holds the leak" do
    serve(@dir, { every: 300 }, 600)
    report = leaks_json(@dir)
    expect(report["findings"].size).to eq(1), report["findings"].map { |f| f["headline"]["location"] }.inspect
    leak = report["findings"].first
    holder = leak["holder"]
    expect(holder).not_to be_nil
    # The subscriber list of ActiveSupport::Notifications' fanout: not the
    # leaked objects' own container, nor the innermost named holder.
    expect(holder["step"]).to include("type" => "ARRAY")
    expect(holder["step"]["file"]).to end_with("active_support/notifications/fanout.rb")
    expect(holder["within"]).to include("type" => "MODULE", "name" => "ActiveSupport::Notifications")
    # Each chain once: no two with the same steps (addresses aside), the JSON in full.
    shapes = leak["held_by"].map { |c| c["steps"].map { |s| s.values_at("type", "class", "name", "file", "line") } }
    expect(shapes.uniq.size).to eq(shapes.size)
    expect(leak["held_by"].first["steps"].first).to include("type" => "ROOT")
    expect(leak["held_by"].first["steps"].last["address"]).to match(/\A0x\h+\z/)

    wide = leaks_text(@dir, columns: 160)
    expect(wide).to include("held by Array at activesupport/lib/active_support/notifications/fanout.rb:" \
                            "#{holder['step']['line']} in ActiveSupport::Notifications (MODULE)")
    # In 100 columns, what it is within goes under it rather than off the edge.
    text = leaks_text(@dir, columns: 100)
    expect(text).to match(%r{held by Array at activesupport/lib/active_support/notifications/fanout.rb:\d+\n +in ActiveSupport::Notifications \(MODULE\)\n})
    expect(text.lines.map { |l| l.chomp.length }.max).to be <= 100
    paths = text[/^What holds them.*\z/m]
    expect(paths).not_to be_nil, text
    # Short: a line per holder and per distinct path shown, not a line per sampled object.
    expect(paths.lines.size).to be < 25, paths
    expect(paths).not_to match(/0x\h{6,}/)
    expect(paths).to include("root (", "ActiveSupport::Notifications (MODULE)")
    # The per-site view names the same holder on its summary lines.
    expect(leaks_text(@dir, "--sites", columns: 200)).to include("held by Array at activesupport/lib/active_support/notifications/fanout.rb:")

    html = File.join(@dir, "report.html")
    _out, err, status = cli("leaks", @dir, "--format", "html", "--output", html)
    expect(status).to eq(0), err
    page = File.read(html)
    # The header counts what was read: the census and the dump read for what holds the leak.
    expect(page).to include("1 leak(s) from #{report['growing_sites']} growing site(s)",
                            "census of 600 requests, 1 dump(s) read for what holds them")
    expect(page).to include("Array at activesupport/lib/active_support/notifications/fanout.rb:")
    # Paths relative to the app or the gem, as in the text; the full one only on hover.
    legend = page.scan(%r{<div class="legend".*?</div>}m).join
    expect(legend).to include("spec/fixtures/get_env.rb:")
    expect(legend).not_to include(AnalysisHelpers::ROOT)
    expect(page.scan(%r{<td class="loc"[^>]*>([^<]*)</td>}).flatten).to all(satisfy { |l| !l.start_with?("/") })
  end

  it "counts a site growing in several processes once, with each process's figures beside it" do
    serve(@dir, { every: nil, auto_dump: false }, 600)
    serve(@dir, { every: nil, auto_dump: false }, 600)
    report = leaks_json(@dir, "--top", "0")
    pids = report["processes"].map { |p| p["pid"] }
    expect(pids.size).to eq(2)
    distinct = report["sites"].map { |s| [s["location"], s["type"], s["class"]] }.uniq.size
    expect(report["sites"].size).to eq(2 * distinct)
    expect(report["growing_sites"]).to eq(distinct)
    expect(report["findings"].size).to eq(1)
    leak = report["findings"].first
    expect(leak["processes"].map { |p| p["pid"] }).to eq(pids.sort)
    expect(leak["sites"].size).to eq(distinct)
    expect(leak["sites"]).to all(satisfy { |s| s["processes"].size == 2 })

    text = leaks_text(@dir, columns: 120)
    expect(text.lines.first).to start_with("Leaks in #{@dir}: 1 leak(s) from #{distinct} growing site(s) (2 process(es)")
    expect(text).to match(/in 2 process\(es\): #{pids.min} \d\.\d\d\/req, #{pids.max} \d\.\d\d\/req/)
    per_site = leaks_text(@dir, "--sites", "--top", "0", columns: 160)
    expect(per_site.lines.first).to include("#{distinct} growing site(s)")
    expect(per_site.lines.find { |l| l.include?("objects/req") }).to match(/#\s+pid\s+objects\/req/)
  end

  it "fits the HTML page to a 1,400 px window" do
    skip_outside_ci "chromium is not installed (apt-get install -y chromium, or bin/setup)" unless chromium

    serve(@dir, { every: 300 }, 600)
    serve(@dir, { every: nil }, 600)
    html = File.join(@dir, "report.html")
    _out, err, status = cli("leaks", @dir, "--format", "html", "--top", "0", "--output", html)
    expect(status).to eq(0), err
    # The page's own width, as Chromium lays it out in a 1,400 px window.
    probe = File.join(@dir, "probe.html")
    File.write(probe, File.read(html).sub("</body>", "<script>document.title = 'width=' + " \
                                                     "document.documentElement.scrollWidth</script></body>"))
    profile = Dir.mktmpdir("chromium-profile")
    dom, err, status = Open3.capture3(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--disable-background-networking", "--user-data-dir=#{profile}",
                                      "--window-size=1400,900", "--dump-dom", "file://#{probe}")
    expect(status).to be_success, err
    width = dom[/<title>width=(\d+)<\/title>/, 1]
    expect(width).not_to be_nil, dom[0, 500]
    expect(Integer(width)).to be <= 1400
  ensure
    FileUtils.rm_rf(profile) if profile
  end
end
