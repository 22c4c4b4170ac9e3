# frozen_string_literal: true

require "rack"

# A small Rack app with one deliberate leak and one bounded cache, for bin/demo.
module Demo
  # Every request to /leak remembers a line here, forever: the leak.
  AUDIT_LOG = []

  # At most CACHE_SIZE rendered pages: fills up, then stays flat. Not a leak.
  CACHE = {}
  CACHE_SIZE = 4

  class App
    def call(env)
      request = Rack::Request.new(env)
      body = case request.path_info
             when "/leak" then audit(request)
             when "/cache" then cached_page(request.params["id"].to_i)
             else "hello"
             end
      [200, { "content-type" => "text/plain" }, [body]]
    end

    private

    def audit(request)
      AUDIT_LOG << "#{request.request_method} #{request.path_info} at #{Time.now.to_f} " * 8 # the leak
      "noted"
    end

    def cached_page(id)
      key = id % CACHE_SIZE
      CACHE[key] ||= "page #{key} rendered at #{Time.now.to_f} " * 8 # a bounded cache
    end
  end

  # file:line of the leak and of the cache, for the report and the spec.
  def self.line_of(marker)
    "#{__FILE__}:#{File.readlines(__FILE__).index { |l| l.include?(marker) } + 1}"
  end
end
