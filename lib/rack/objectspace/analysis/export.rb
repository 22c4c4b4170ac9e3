# frozen_string_literal: true

require "rbconfig"
require "rack/objectspace/rebuild"

module Rack
  class Objectspace
    module Analysis
      # `rack-objectspace export SOURCE OUTDIR`: runs the rack-objectspace-export
      # binary (ext/objectspace_export), a crate of its own so that the Parquet
      # writer does not add to the extension's compile time. `gem install` builds
      # it into lib/rack/objectspace/, as `rake compile:export` (and bin/setup) does
      # in a checkout.
      module Export
        NAME = "rack-objectspace-export"
        INSTALLED = ::File.expand_path("../#{NAME}", __dir__)

        module_function

        # Where the binary is looked for: RACK_OBJECTSPACE_EXPORT, else the installed one.
        def wanted
          ENV.fetch("RACK_OBJECTSPACE_EXPORT", INSTALLED)
        end

        # The binary to run; nil if there is none where it is looked for.
        def binary
          path = wanted
          ::File.file?(path) && ::File.executable?(path) ? path : nil
        end

        # What to say when there is no binary to run, and how to fix it.
        def missing
          if ENV.key?("RACK_OBJECTSPACE_EXPORT")
            return "RACK_OBJECTSPACE_EXPORT=#{wanted} is not a program: point it at a #{NAME}, " \
                   "or unset it to run the one the gem builds (#{INSTALLED})"
          end

          "export needs #{NAME}, which is not built (no program at #{INSTALLED}). " \
            "To fix this, run `#{Rebuild.command('compile:export')}`."
        end

        # Options of the binary that take a value (the rest of the arguments are SOURCE and OUTDIR).
        VALUE_OPTIONS = %w[--row-group --file-rows].freeze

        # @return [Integer] the exit status (the binary's: 0, 1 unreadable input, 2 usage)
        def run(args, out: $stdout, err: $stderr)
          path = binary
          unless path
            err.puts "rack-objectspace: #{missing}"
            return 1
          end
          source = source_index(args)
          return spawn(path, args, out, err) unless source && Analysis::Redis.url?(args[source])

          from_redis(path, args, source, out, err)
        end

        # The index of SOURCE in `args` (the first argument that is not an option or its value).
        def source_index(args)
          skip = false
          args.each_index.find do |i|
            was = skip
            skip = VALUE_OPTIONS.include?(args[i])
            !was && !args[i].start_with?("-")
          end
        end

        # A redis:// SOURCE (the README's `Moneta.new(:Redis, url:)` store), read as `leaks`
        # reads it: its dumps and census batches copied to a temporary folder, exported from there.
        def from_redis(path, args, source, out, err)
          require "rack/objectspace/analysis"
          url = args[source]
          Analysis.with_copy(Analysis::Redis.open(url)) do |dir, _reader|
            spawn(path, args.dup.tap { |a| a[source] = dir }, out, err)
          end
        rescue Rack::Objectspace::Error => e
          err.puts "rack-objectspace: #{e.message}"
          1
        rescue StandardError => e
          err.puts "rack-objectspace: #{Log.describe_url(url)}: #{e.class}: #{e.message}"
          1
        end

        def spawn(path, args, out, err)
          if out.respond_to?(:fileno) && err.respond_to?(:fileno)
            _, status = Process.wait2(Process.spawn(path, *args, out: out, err: err))
          else
            require "open3"
            stdout, stderr, status = Open3.capture3(path, *args)
            out.write(stdout)
            err.write(stderr)
          end
          status.exitstatus || (128 + status.termsig.to_i)
        rescue Interrupt
          err.puts "rack-objectspace: interrupted"
          130
        end
      end
    end
  end
end
