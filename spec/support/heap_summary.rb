# frozen_string_literal: true

require "set"

# A compact look at a stored dump, for the integration specs: parsing every
# record into Ruby Hashes would put a million objects on this very heap, which
# the next dump (inline mode) would then have to dump.
module HeapSummary
  # @return [Hash] lines:, types: (Set of record types), classes: (Set of CLASS names), invalid: lines not JSON
  def heap_summary(bytes)
    summary = { lines: 0, types: Set.new, classes: Set.new, invalid: 0 }
    Zlib::GzipReader.wrap(StringIO.new(bytes)) do |gz|
      gz.each_line do |line|
        summary[:lines] += 1
        type = line[/"type":"([A-Z_]+)"/, 1]
        summary[:types] << type if type
        summary[:classes] << line[/"name":"([^"]+)"/, 1] if type == "CLASS"
        # Parse a sample in full: every 97th record must be one JSON object.
        next unless (summary[:lines] % 97).zero?

        begin
          summary[:invalid] += 1 unless JSON.parse(line).is_a?(Hash)
        rescue JSON::ParserError
          summary[:invalid] += 1
        end
      end
    end
    summary
  end
end

RSpec.configure { |c| c.include HeapSummary } if defined?(RSpec) && RSpec.respond_to?(:configure)
