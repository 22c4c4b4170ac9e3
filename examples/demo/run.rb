# frozen_string_literal: true

require "fileutils"
require "rack"
require "rack/mock"
require_relative "app"
require "rack/objectspace"
require "rack/objectspace/analysis"

module Demo
  module_function

  # The request mix: /leak, /cache?id=N, /search?q=N and / in turn.
  def path_for(i)
    case i % 4
    when 0 then "/leak"
    when 1 then "/cache?id=#{i / 4}"
    when 2 then "/search?q=term-#{i}"
    else "/"
    end
  end

  # Boot the app behind the middleware, send `requests` requests, wait for the
  # dumps, and analyse them. On the defaults (`every: nil`) the census counts
  # and asks for the dump that shows what holds the leaks (auto_dump);
  # `auto_dump: false` leaves the census alone; `every: 1` dumps each request
  # (retained dumps, one at a time).
  # @return [Hash] the leaks report
  # `sampling` (census: :sampled, sample_rate:, sample_seed:) runs the sampled census.
  def run(dir:, requests: 400, mode: :fork, every: nil, auto_dump: true, out: $stdout, **sampling)
    FileUtils.rm_rf(dir)
    FileUtils.mkdir_p(dir)
    options = every ? { every: every, dump: :retained } : { auto_dump: auto_dump }
    # Rack::Lint on both sides, as a real server would check.
    middleware = Rack::Objectspace.new(Rack::Lint.new(Demo::App.new), store: "file://#{dir}", mode: mode, **options,
                                                                      **sampling)
    app = Rack::Lint.new(middleware)
    mock = Rack::MockRequest.new(app)
    requests.times do |i|
      response = mock.get(path_for(i))
      raise "GET #{path_for(i)} answered #{response.status}" unless response.status == 200

      # One request at a time, as a quiet staging server would see them: let
      # this request's dump finish (fork mode drops dumps beyond max_children).
      middleware.flush(30) if every
    end
    stats = middleware.flush(30) # the census's last batch, and the dumps it asked for
    out&.puts "sent #{requests} requests; dumps taken: #{stats[:dumped]}, stored: #{stats[:stored]}"
    Rack::Objectspace::Analysis.leaks(dir, top: 10)
  end

  # Where the report puts the demo's two leaks and its cache: each one's
  # rank among the findings (1 first), nil where it is not one. A finding is
  # named by its headline site or by the app's line that leads to it.
  # @return [Hash{Symbol => Integer, nil}] :leak, :search, :cache
  def found(report)
    lines = { leak: line_of("# the leak"), search: line_of("# the gem-allocated leak"),
              cache: line_of("# a bounded cache") }
    lines.transform_values do |line|
      rank = report["findings"].index do |f|
        here = [f.dig("headline", "location"), f.dig("app_line", "location")]
        here.include?(line) || f["sites"].any? { |s| s["location"] == line }
      end
      rank && rank + 1
    end
  end
end
