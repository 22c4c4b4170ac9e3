# frozen_string_literal: true

require "json"

# The request-like work bench/trace.rb and bench/trace_instructions.rb measure
# tracing on: 20 rows built and JSON-encoded, with a few strings and arrays.
def work
  rows = Array.new(20) { |i| { id: i, name: "row #{i}", path: "/page" } }
  headers = { "content-type" => "application/json", "x-pid" => Process.pid.to_s }
  [200, headers, [JSON.generate(rows)]]
end

# A long-lived heap, as an app has: GC has real work and the tables real size.
def keep_heap = Array.new(200_000) { |i| "cached-#{i}" }
