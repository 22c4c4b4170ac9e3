# frozen_string_literal: true

require "fileutils"
require "rack"
require "rack/mock"
require_relative "app"
require "rack/objectspace"
require "rack/objectspace/analysis"

module Demo
  module_function

  # The request mix: /leak, /cache?id=N and / in turn.
  def path_for(i)
    case i % 3
    when 0 then "/leak"
    when 1 then "/cache?id=#{i}"
    else "/"
    end
  end

  # Boot the app behind the middleware, send `requests` requests, wait for the
  # dumps, and analyse them. `every: nil` takes no dump: the census alone.
  # @return [Hash] the leaks report
  def run(dir:, requests: 45, mode: :fork, every: 1, out: $stdout)
    FileUtils.rm_rf(dir)
    FileUtils.mkdir_p(dir)
    # Rack::Lint on both sides, as a real server would check.
    middleware = Rack::Objectspace.new(Rack::Lint.new(Demo::App.new),
                                       store: "file://#{dir}", dump: :retained, every: every, mode: mode)
    app = Rack::Lint.new(middleware)
    mock = Rack::MockRequest.new(app)
    requests.times do |i|
      response = mock.get(path_for(i))
      raise "GET #{path_for(i)} answered #{response.status}" unless response.status == 200

      # One request at a time, as a quiet staging server would see them: let
      # this request's dump finish (fork mode drops dumps beyond max_children).
      middleware.flush(30) if every
    end
    middleware.flush(30) # the census's last batch
    stats = middleware.stats
    out&.puts "sent #{requests} requests; dumps: #{stats.inspect}"
    Rack::Objectspace::Analysis.leaks(dir, top: 10)
  end
end
