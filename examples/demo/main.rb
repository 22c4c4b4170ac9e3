# frozen_string_literal: true

# The demo (run by bin/demo, after bin/setup): boots the demo app behind
# Rack::Objectspace, sends it a few dozen requests, and names the line that leaks.
#   bin/demo [--requests N] [--inline] [--no-dumps]
# --no-dumps: every: nil, no dump at all: the census alone finds the leak
# (it needs more requests: 300 unless --requests says otherwise).
ROOT = File.expand_path("../..", __dir__)
$LOAD_PATH.unshift File.join(ROOT, "lib")
Dir.chdir(ROOT)

requests = nil
mode = :fork
every = 1
args = ARGV.dup
until args.empty?
  case (arg = args.shift)
  when "--requests" then requests = Integer(args.shift)
  when "--inline" then mode = :inline
  when "--no-dumps" then every = nil
  when "-h", "--help"
    puts "Usage: bin/demo [--requests N] [--inline] [--no-dumps]"
    exit 0
  else
    warn "bin/demo: unknown argument #{arg}"
    exit 2
  end
end

requests ||= every ? 45 : 300
require_relative "run"
require "rack/objectspace/analysis/cli"

dir = File.join(ROOT, "tmp/demo-dumps")
options = every ? "dump: :retained, mode: :#{mode}" : "every: nil: no dump, the census alone"
puts "== demo app: #{requests} requests to /leak, /cache?id=N and / behind Rack::Objectspace (#{options})"
report = Demo.run(dir: dir, requests: requests, mode: mode, every: every)
puts "== rack-objectspace leaks tmp/demo-dumps"
puts Rack::Objectspace::Analysis::Text.render(report)
report["warnings"].each { |w| warn "warning: #{w}" }

html = File.join(ROOT, "tmp/demo-report.html")
File.write(html, Rack::Objectspace::Analysis::Html.render(report))
top = report["sites"].first
puts "The leak:        #{Demo.line_of('# the leak')}"
puts "Ranked first:    #{top ? top['location'] : '(nothing)'}"
puts "Bounded cache:   #{Demo.line_of('# a bounded cache')} (not ranked)" if report["sites"].none? { |s| s["location"] == Demo.line_of("# a bounded cache") }
puts "HTML report:     #{html}"
puts "Same from the command line: exe/rack-objectspace leaks tmp/demo-dumps --format html --output #{html}"
exit(top && top["location"] == Demo.line_of("# the leak") ? 0 : 1)
