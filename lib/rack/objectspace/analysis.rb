# frozen_string_literal: true

require "json"
require "rack/objectspace/native"

module Rack
  class Objectspace
    # Reading heap dumps back and naming the code that leaks. A thin layer over
    # the native analyser: each method returns the report as a Hash (the same
    # schema as `rack-objectspace ... --format json`), whose "sites" array is
    # most significant first and each site has "file", "line", "count",
    # "memsize", "type", "class", "gem" and "location".
    #
    # Inputs are paths or store URLs; dumps may be plain or gzipped JSON lines.
    #
    # @example In a console
    #   report = Rack::Objectspace::Analysis.leaks("file://tmp/objectspace")
    #   report["sites"].first.values_at("location", "per_request")
    module Analysis
      # Sites (and rows of each grouping) kept when no top: is given.
      DEFAULT_TOP = 20

      module_function

      # Summary of one dump: count and memsize by type, class, gem, file, file:line.
      # @param path [String] a dump file (.jsonl, .jsonl.gz) or a store URL of one
      # @param top [Integer] rows to keep per table (0 keeps all)
      # @param progress [Boolean] draw a progress bar on stderr
      # @return [Hash]
      # @raise [ParseError] when the dump cannot be read; the message names the file and line
      def summary(path, top: DEFAULT_TOP, progress: false)
        parse(Native::Analysis.summary(path.to_s, Integer(top), progress ? true : false))
      end

      # Objects present in `after` but not in `before`, and still present in `retained`.
      # @return [Hash] with "sites" ordered by retained object count
      def diff(before, after, retained, top: DEFAULT_TOP, progress: false)
        parse(Native::Analysis.diff(before.to_s, after.to_s, retained.to_s, Integer(top), progress ? true : false))
      end

      # Sites whose live objects keep growing across each process's dumps.
      # @param source [String] a folder or store URL the middleware wrote to
      # @return [Hash] with "sites" (fastest growing first), "processes" (each
      #   with its "dumps" series) and "warnings" (skipped dumps)
      def leaks(source, top: DEFAULT_TOP, progress: false)
        parse(Native::Analysis.leaks(source.to_s, Integer(top), progress ? true : false))
      end

      # The dumps of a session, with their metadata.
      # @return [Hash] with "dumps"
      def ls(source)
        parse(Native::Analysis.ls(source.to_s))
      end

      def parse(json)
        JSON.parse(json)
      end
      private_class_method :parse
    end
  end
end
