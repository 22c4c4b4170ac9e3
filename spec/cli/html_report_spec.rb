# frozen_string_literal: true

require_relative "../../examples/demo/run"

RSpec.describe "the HTML report" do
  it "is one self-contained page with charts, and Chromium renders it" do
    Dir.mktmpdir("html") do |dir|
      dumps = File.join(dir, "dumps")
      Demo.run(dir: dumps, requests: 30, mode: :inline, out: nil)
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
        skip "chromium is not installed (apt-get install -y chromium); the page was checked statically only"
      end
      png = screenshot(html, File.join(dir, "report.png"))
      expect(png_size(png)).to eq([1200, 1600])
      expect(File.size(png)).to be > 20_000 # a blank page compresses to a few kB
      FileUtils.mkdir_p(File.join(AnalysisHelpers::ROOT, "tmp"))
      FileUtils.cp(png, File.join(AnalysisHelpers::ROOT, "tmp", "html-report-screenshot.png"))
    end
  end
end
