# frozen_string_literal: true

# The demo (run by bin/demo, after bin/setup): boots the demo app behind
# Rack::Objectspace on its defaults, sends it 400 requests, and names the two
# lines that leak: one whose objects the app allocates, one whose objects rack
# allocates and the app keeps.
#   bin/demo [--requests N] [--inline] [--no-dumps] [--every N]
# --no-dumps: auto_dump: false, the census alone (no "what holds them").
# --every N: a retained dump of every Nth request, as the original gem did.
ROOT = File.expand_path("../..", __dir__)
$LOAD_PATH.unshift File.join(ROOT, "lib")
Dir.chdir(ROOT)

requests = 400
mode = :fork
every = nil
auto_dump = true
args = ARGV.dup
until args.empty?
  case (arg = args.shift)
  when "--requests" then requests = Integer(args.shift)
  when "--inline" then mode = :inline
  when "--no-dumps" then auto_dump = false
  when "--every" then every = Integer(args.shift)
  when "-h", "--help"
    puts "Usage: bin/demo [--requests N] [--inline] [--no-dumps] [--every N]"
    exit 0
  else
    warn "bin/demo: unknown argument #{arg}"
    exit 2
  end
end

require_relative "run"
require "rack/objectspace/analysis/cli"

dir = "tmp/demo-dumps" # relative to ROOT, the current folder
options = if every then "every: #{every}, dump: :retained"
          elsif auto_dump then "the defaults: the census, and the dump it asks for"
          else "auto_dump: false: the census alone"
          end
puts "== demo app: #{requests} requests to /leak, /cache?id=N, /search?q=N and / behind Rack::Objectspace " \
     "(#{options}, mode: :#{mode})"
report = Demo.run(dir: dir, requests: requests, mode: mode, every: every, auto_dump: auto_dump)
puts "== rack-objectspace leaks tmp/demo-dumps"
puts Rack::Objectspace::Analysis::Text.render(report)
report["warnings"].each { |w| warn "warning: #{w}" }

html = "tmp/demo-report.html"
File.write(html, Rack::Objectspace::Analysis::Html.render(report))
found = Demo.found(report)
line = ->(marker) { Demo.line_of(marker).delete_prefix("#{ROOT}/") }
puts "The leaks:       #{line['# the leak']} (the app allocates)"
puts "                 #{line['# the gem-allocated leak']} (rack allocates, the app keeps)"
puts "Found as:        #{found[:leak] ? "##{found[:leak]}" : '(not found)'} and " \
     "#{found[:search] ? "##{found[:search]}" : '(not found)'}"
puts "Bounded cache:   #{line['# a bounded cache']} (#{found[:cache] ? 'ranked!' : 'not ranked'})"
puts "HTML report:     #{html}"
puts "Same from the command line: exe/rack-objectspace leaks tmp/demo-dumps --format html --output #{html}"
exit(found[:leak] && found[:search] && !found[:cache] ? 0 : 1)
