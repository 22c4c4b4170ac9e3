# frozen_string_literal: true

require "open3"
require "rack/objectspace/analysis"
require "rack/objectspace/analysis/text"

# Leaks a library allocates and the app causes: the census names the app's line
# that leads there (spec/fixtures/notifications_app.rb, spec/fixtures/set_app.rb),
# from the stacks it samples at library sites whose count keeps rising.
RSpec.describe "The app's line behind a library's leak" do
  include_context "a temporary folder"

  def fixture(name) = File.expand_path("../fixtures/#{name}", __dir__)

  # The report's sites in `library` (a path fragment), after running `app` with `args`.
  def library_sites(app, args, library)
    _, err, status = Open3.capture3(RbConfig.ruby, app, @dir, *args)
    expect(status).to be_success, err
    report = Rack::Objectspace::Analysis.leaks("file://#{@dir}", top: 0)
    sites = report["sites"].select { |s| s["file"].include?(library) }
    expect(sites).not_to be_empty, "#{report['warnings']} #{report['sites'].map { |s| s['location'] }}"
    # Sites in the app's own code need none.
    (report["sites"] - sites).reject { |s| s["file"].include?("/vendor_ruby/") }
                             .each { |s| expect(s["called_from"]).to be_nil, s["location"] }
    [report, sites]
  end

  # Every site names `app`'s line that holds `call` as its first caller.
  def expect_the_apps_line(sites, app, call)
    line = File.readlines(app).index { |l| l.include?(call) } + 1
    sites.each do |site|
      callers = site["called_from"] || []
      expect(callers.first&.fetch("location")).to eq("#{app}:#{line}"), "#{site['location']} #{site['type']}: #{callers}"
      expect(callers.first["samples"]).to be >= 5
    end
  end

  it "names the subscribe call for the subscriber activesupport allocates, census only",
     debian_ruby_only: "activesupport is Debian's, for Ruby 3.1" do
    app = fixture("notifications_app.rb")
    report, sites = library_sites(app, ['{"every":null}', "600"], "/active_support/")
    expect_the_apps_line(sites, app, "Notifications.subscribe(")
    # One finding, and it names the app's line first.
    expect(report["findings"].size).to eq(1)
    expect(report["findings"].first["app_line"]).to include("location" => sites.first["called_from"].first["location"])
    text = Rack::Objectspace::Analysis::Text.render(report)
    short = "#{app.delete_prefix("#{Dir.pwd}/")}:"
    expect(text).to include("the app's line: #{short}").and include("#{short}").and include("(calls activesupport)")
    sites_text = Rack::Objectspace::Analysis::Text.render(report, sites: true)
    expect(sites_text).to include("The app's line").and include("<- #{short}")
  end

  it "names the line that keeps a Set for the Hash Ruby's set.rb allocates" do
    app = fixture("set_app.rb")
    _, sites = library_sites(app, ["600"], "set.rb")
    expect_the_apps_line(sites, app, "Set.new(")
  end
end
