# frozen_string_literal: true

require "json"
require "tmpdir"
require "fileutils"
require "zlib"
require "pathname"
require "rack/objectspace/native"
require "rack/objectspace/log"

module Rack
  class Objectspace
    # Reading heap dumps back and naming the code that leaks. A thin layer over
    # the native analyser: each method returns the report as a Hash (the same
    # schema as `rack-objectspace ... --format json`), whose "sites" array is
    # most significant first and each site has "file", "line", "count",
    # "memsize", "type", "class", "gem" and "location".
    #
    # Inputs are paths, store URLs (file://, s3://, gs://, az://, and redis://
    # through Moneta), or any Ruby store the middleware wrote to: an object
    # responding to `[]` and `each_key` or `keys` (a Hash, a Moneta store).
    # Dumps may be plain or gzipped JSON lines.
    #
    # @example In a console
    #   report = Rack::Objectspace::Analysis.leaks("file://tmp/objectspace")
    #   report["sites"].first.values_at("location", "per_request")
    #   Rack::Objectspace::Analysis.leaks(Moneta.new(:Redis, url: "redis://127.0.0.1:6379/0"))
    module Analysis
      # Sites (and rows of each grouping) kept when no top: is given.
      DEFAULT_TOP = 20
      # A growing site under either of these is noise (the server's and the
      # logger's own buffers): fewer objects per request, or fewer live
      # objects in all. Shown only with all: true (`--all`).
      NOISE_PER_REQUEST = 0.05
      NOISE_OBJECTS = 3

      module_function

      # Summary of one dump: count and memsize by type, class, gem, file, file:line.
      # @param path [String, #[]] a dump file (.jsonl, .jsonl.gz) or a store URL of one;
      #   or a SOURCE (folder, store URL, redis:// URL, Ruby store) when `key` is given
      # @param key [String, nil] a key of SOURCE, as `ls` prints it
      # @param top [Integer] rows to keep per table (0 keeps all)
      # @param progress [Boolean] draw a progress bar on stderr
      # @return [Hash]
      # @raise [ParseError] when the dump cannot be read; the message names the file and line
      def summary(path, key = nil, top: DEFAULT_TOP, progress: false)
        with_dumps(path, key ? [key] : nil) do |file|
          parse(Native::Analysis.summary(file.first, Integer(top), progress ? true : false))
        end
      end

      # Objects present in `after` but not in `before`, and still present in `retained`.
      # Called with four arguments, the first is a SOURCE and the others its keys
      # (`diff(source, key1, key2, key3)`), as `ls` prints them.
      # @return [Hash] with "sites" ordered by retained object count
      def diff(*inputs, top: DEFAULT_TOP, progress: false)
        unless [3, 4].include?(inputs.size)
          raise ArgumentError, "diff takes 3 dumps (BEFORE AFTER RETAINED) or a SOURCE and 3 of its keys, " \
                               "got #{inputs.size} argument(s)"
        end
        source, keys = inputs.size == 4 ? [inputs[0], inputs[1..]] : [nil, inputs]
        with_dumps(source, keys) do |files|
          report = parse(Native::Analysis.diff(*files, Integer(top), progress ? true : false))
          report["inputs"] = keys.map(&:to_s) if source
          report
        end
      end

      # Sites whose live objects keep growing across each process's dumps.
      # @param source [String, #[]] a folder or store URL the middleware wrote to, a
      #   redis:// URL (read through Moneta), or a Ruby store (`[]` and `each_key`/`keys`)
      # @param all [Boolean] keep sites below the noise floor (under
      #   NOISE_PER_REQUEST objects per request or NOISE_OBJECTS live objects in all)
      # @return [Hash] with "sites" (fastest growing first), "hidden_sites" (how
      #   many growing sites the noise floor left out), "processes" (each with its
      #   "dumps" series and "missing_dumps") and "warnings" (skipped dumps)
      def leaks(source, top: DEFAULT_TOP, progress: false, all: false)
        top = Integer(top)
        raise ArgumentError, "top: must be 0 or more, got #{top}" if top.negative?

        floor = all ? nil : [NOISE_PER_REQUEST.to_f, NOISE_OBJECTS]
        # The noise floor applies natively, before the top N are kept: only
        # those cross into Ruby, whatever the number of processes.
        with_session(source) do |dir|
          parse(Native::Analysis.leaks(dir, top, progress ? true : false, floor))
        end
      end

      # The dumps of a session, with their metadata, and how many each process is missing.
      # @param source [String, #[]] as for #leaks
      # @return [Hash] with "dumps" and "processes"
      def ls(source)
        with_session(source) { |dir| parse(Native::Analysis.ls(dir)) }
      end

      # A Ruby store the analyses can read: `[]` and `each_key` or `keys`.
      def store?(object)
        !object.is_a?(String) && object.respond_to?(:[]) &&
          (object.respond_to?(:each_key) || object.respond_to?(:keys))
      end

      def parse(json)
        JSON.parse(json)
      end
      private_class_method :parse

      # Yields a folder or URL the native analyser reads for `source`: itself,
      # or a temporary copy of a Ruby store's dumps (see StoreReader).
      def with_session(source)
        source = Redis.open(source) if Redis.url?(source)
        check_source(source)
        return yield(source.to_s) unless store?(source)

        with_copy(source) do |dir, reader|
          report = yield(dir)
          report["source"] = describe(source)
          report["warnings"] = reader.warnings + report.fetch("warnings", [])
          report
        end
      end
      private_class_method :with_session

      # Yields a temporary folder holding a copy of a Ruby store's dumps and
      # census batches, and the StoreReader that made it (for its warnings).
      def with_copy(store)
        Dir.mktmpdir("rack-objectspace-") do |dir|
          reader = StoreReader.new(store)
          reader.copy_all(dir)
          yield(dir, reader)
        end
      end

      # Yields the paths of `keys` of `source` (or `source` itself when keys is nil).
      def with_dumps(source, keys)
        return yield(keys.map(&:to_s)) if source.nil?
        return yield([source.to_s]) if keys.nil? && !store?(source) && !Redis.url?(source)
        raise ArgumentError, "give a key of #{describe(source)} (as `ls` prints it)" if keys.nil?

        source = Redis.open(source) if Redis.url?(source)
        check_source(source)
        unless store?(source)
          base = source.to_s
          return yield(keys.map { |k| base.include?("://") ? "#{base.chomp('/')}/#{k}" : ::File.join(base, k.to_s) })
        end

        Dir.mktmpdir("rack-objectspace-") do |dir|
          reader = StoreReader.new(source)
          yield(keys.map { |k| reader.copy_dump(k.to_s, dir) })
        end
      end
      private_class_method :with_dumps

      def check_source(source)
        return if source.is_a?(String) || source.is_a?(Pathname) || store?(source)

        raise ArgumentError, "expected a folder, a store URL or a store responding to [] and each_key or keys, " \
                             "got #{source.class}"
      end
      private_class_method :check_source

      def describe(source)
        return source.to_s unless store?(source)
        return source.description if source.respond_to?(:description)

        Log.describe_store(source)
      end
      private_class_method :describe

      # redis:// and rediss:// URLs: read through Moneta, as the middleware
      # wrote with `store: Moneta.new(:Redis, url: ...)` (Marshal-ed keys and values).
      module Redis
        SCHEMES = %w[redis:// rediss://].freeze

        module_function

        def url?(source)
          source.is_a?(String) && SCHEMES.any? { |s| source.start_with?(s) }
        end

        def open(url)
          begin
            require "moneta"
          rescue LoadError
            raise ArgumentError, "#{Log.describe_url(url)}: reading Redis needs the moneta and redis gems " \
                                 "(gem install moneta redis; Debian: apt-get install ruby-moneta ruby-redis)"
          end
          store = Moneta.new(:Redis, url: url, connect_timeout: 5, timeout: 30)
          description = Log.describe_url(url)
          store.define_singleton_method(:description) { description }
          store
        end
      end

      # Copies a Ruby store's dumps to a folder, in the key layout the
      # middleware writes, so that the native analyser reads them as it reads
      # a file:// store (on several threads, streaming each file).
      #
      # Memory stays bounded by one stored value at a time: the `:dump` layout's
      # values (gzipped dumps) are written out one by one; the `:object`
      # layout's records (`<dump-key>/<address>`) are fetched one by one and
      # streamed into a gzipped dump file, in address order, a batch of
      # records (BATCH, one `values_at` call) at a time. Only the key names
      # are held. The disk holds a copy of the dumps, gzipped, until the
      # analysis ends.
      class StoreReader
        DUMP = /\.(jsonl|json)(\.gz)?\z/.freeze
        META = ".meta.json"
        # `<host>/<pid>/census-<seq>.ndjson.gz`: the census's batches.
        CENSUS = %r{(\A|/)census-\d+\.ndjson\.gz\z}.freeze
        # `<dump-key>/<address>` and `<dump-key>/root-<n>` (layout: :object)
        OBJECT = %r{\A(.+\.jsonl\.gz)/(0x\h+|root-\d+)\z}.freeze

        attr_reader :warnings

        def initialize(store)
          @store = store
          @warnings = []
        end

        # Copies every dump, metadata record and census batch of the store under `dir`.
        def copy_all(dir)
          objects = Hash.new { |h, k| h[k] = [] }
          each_key do |key|
            if (m = OBJECT.match(key))
              objects[m[1]] << m[2]
            elsif key.end_with?(META) || DUMP.match?(key) || CENSUS.match?(key)
              write(dir, key, @store[key])
            end
          end
          objects.each { |dump_key, parts| write_objects(dir, dump_key, parts) }
          raise Rack::Objectspace::Error, "#{Analysis.send(:describe, @store)}: no dumps or census found" if ::Dir.empty?(dir)
        end

        # Copies one dump (and its metadata, if any) to `dir`; returns its path.
        def copy_dump(key, dir)
          value = @store[key]
          path = if value.nil?
                   parts = []
                   each_key { |k| (m = OBJECT.match(k)) && m[1] == key && parts << m[2] }
                   raise Rack::Objectspace::Error, "#{Analysis.send(:describe, @store)}: no key #{key.inspect}" if parts.empty?

                   write_objects(dir, key, parts)
                 else
                   write(dir, key, value)
                 end
          path
        end

        private

        # Records fetched per round trip (`values_at`: one MGET on Moneta's Redis).
        BATCH = 1000

        def fetch(keys)
          @store.respond_to?(:values_at) ? @store.values_at(*keys) : keys.map { |k| @store[k] }
        end

        def each_key(&block)
          if @store.respond_to?(:each_key)
            @store.each_key { |k| block.call(k.to_s) }
          else
            @store.keys.each { |k| block.call(k.to_s) }
          end
        end

        # The local path for a key; keys that would leave `dir` are skipped.
        def path_for(dir, key)
          if key.start_with?("/") || key.split("/").any? { |part| part == ".." || part.empty? }
            @warnings << "skipped key #{key.inspect}: not a relative path the middleware writes"
            return nil
          end
          ::File.join(dir, key)
        end

        def write(dir, key, value)
          path = path_for(dir, key)
          return nil unless path

          if value.nil?
            @warnings << "skipped key #{key.inspect}: gone while reading"
            return nil
          end
          FileUtils.mkdir_p(::File.dirname(path))
          ::File.binwrite(path, value.to_s)
          path
        end

        # A dump stored one record per key, gzipped back into one file.
        def write_objects(dir, dump_key, parts)
          path = path_for(dir, dump_key)
          return nil unless path

          FileUtils.mkdir_p(::File.dirname(path))
          roots, addresses = parts.partition { |p| p.start_with?("root-") }
          ordered = roots.sort_by { |r| r.delete_prefix("root-").to_i } + addresses.sort_by { |a| a.to_i(16) }
          Zlib::GzipWriter.open(path, Zlib::BEST_SPEED) do |gz|
            ordered.each_slice(BATCH) do |batch|
              fetch(batch.map { |part| "#{dump_key}/#{part}" }).each do |record|
                gz.write(record.to_s.chomp, "\n") unless record.nil?
              end
            end
          end
          path
        end
      end
    end
  end
end
