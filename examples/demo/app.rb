# frozen_string_literal: true

require "rack"

# A small Rack app with two deliberate leaks and one bounded cache, for bin/demo.
module Demo
  # Every request to /leak remembers a line here, forever: the leak the app allocates.
  AUDIT_LOG = []

  # Every /search keeps its parsed query for "recent searches", never trimmed:
  # the leak a gem allocates (rack parses the query; the app only keeps it).
  RECENT_SEARCHES = []

  # At most CACHE_SIZE rendered pages: fills up, then stays flat. Not a leak.
  CACHE = {}
  CACHE_SIZE = 4

  class App
    def call(env)
      request = Rack::Request.new(env)
      body = case request.path_info
             when "/leak" then audit(request)
             when "/cache" then cached_page(request.params["id"].to_i)
             when "/search" then search(request)
             else "hello"
             end
      [200, { "content-type" => "text/plain" }, [render(body)]]
    end

    private

    # A page's worth of short-lived objects, as a real page renders: the GCs
    # they bring are what the census counts at.
    def render(body)
      rows = Array.new(2_000) { |i| "<tr><td>#{i}</td></tr>" }
      "#{body} (#{rows.size} rows)"
    end

    def audit(request)
      AUDIT_LOG << "#{request.request_method} #{request.path_info} at #{Time.now.to_f} " * 8 # the leak
      "noted"
    end

    def search(request)
      RECENT_SEARCHES << request.GET # the gem-allocated leak
      "results for #{request.GET['q']}"
    end

    def cached_page(id)
      key = id % CACHE_SIZE
      CACHE[key] ||= "page #{key} rendered at #{Time.now.to_f} " * 8 # a bounded cache
    end
  end

  # file:line of the line ending with `marker` (the leaks, the cache), for the report and the spec.
  def self.line_of(marker)
    "#{__FILE__}:#{File.readlines(__FILE__).index { |l| l.rstrip.end_with?(marker) } + 1}"
  end
end
