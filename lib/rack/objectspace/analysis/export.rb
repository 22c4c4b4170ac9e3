# frozen_string_literal: true

require "rbconfig"

module Rack
  class Objectspace
    module Analysis
      # `rack-objectspace export SOURCE OUTDIR`: runs the rack-objectspace-export
      # binary (ext/objectspace_export), a crate of its own so that the Parquet
      # writer does not add to the extension's compile time. `rake compile:export`
      # (and bin/setup) builds it into lib/rack/objectspace/.
      module Export
        NAME = "rack-objectspace-export"
        INSTALLED = ::File.expand_path("../#{NAME}", __dir__)
        ROOT = ::File.expand_path("../../../..", __dir__)

        module_function

        # The binary to run: RACK_OBJECTSPACE_EXPORT, else the installed one; nil if neither.
        def binary
          path = ENV.fetch("RACK_OBJECTSPACE_EXPORT", INSTALLED)
          ::File.file?(path) && ::File.executable?(path) ? path : nil
        end

        # @return [Integer] the exit status (the binary's: 0, 1 unreadable input, 2 usage)
        def run(args, out: $stdout, err: $stderr)
          path = binary
          unless path
            err.puts "rack-objectspace: export needs #{NAME}, which is not built: run `rake compile:export` " \
                     "in #{ROOT} (cargo; a crate of its own, so the extension compiles without Parquet)"
            return 1
          end
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
