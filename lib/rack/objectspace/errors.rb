# frozen_string_literal: true

module Rack
  class Objectspace
    # Raised when rack-objectspace itself fails; the base of the classes below.
    class Error < StandardError; end

    # Raised when a store refuses or fails a write or read (network, disk, 5xx).
    class StoreError < Error; end

    # Raised when a heap dump cannot be read (truncated gzip, malformed record).
    class ParseError < Error; end
  end
end
