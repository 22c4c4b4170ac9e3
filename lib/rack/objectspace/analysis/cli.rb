# frozen_string_literal: true

require "optparse"
require "rack/objectspace/analysis"
require_relative "text"
require_relative "html"
require_relative "export"

module Rack
  class Objectspace
    module Analysis
      # `rack-objectspace`: the command line over Analysis. Exit status 0 on
      # success, 1 when an input cannot be read, 2 on a usage error. Never
      # prints a backtrace.
      class CLI
        USAGE = <<~TEXT
          Usage: rack-objectspace COMMAND [options] ARGS

          Commands:
            leaks SOURCE        the leaks of a session: sites whose live objects keep growing,
                                those that grow together as one leak (--sites: one row a site)
                                (SOURCE: the folder or store URL the middleware writes to)
            diff A B C          objects in dump B, not in dump A, still in dump C
            diff SOURCE K1 K2 K3  the same, for keys of SOURCE as `ls` prints them
            summary FILE        objects and memsize of one dump by site, type, class, gem, file
            summary SOURCE KEY  the same, for a key of SOURCE
            ls SOURCE           the dumps of a session with their requests and keys
            export SOURCE OUTDIR  the census of every process and a summary of every dump
                                as Parquet, for DuckDB, Spark or Athena (`export --help`)

          Dumps are ObjectSpace.dump_all JSON lines, plain or gzipped; FILE and SOURCE
          may be paths or store URLs (file://DIR, s3://BUCKET/PREFIX, gs://, az://,
          redis://HOST:PORT/DB for a Moneta.new(:Redis) store).

          Options:
        TEXT

        ARITY = { "leaks" => [1], "diff" => [3, 4], "summary" => [1, 2], "ls" => [1] }.freeze
        FORMATS = %w[text json html].freeze
        # Inputs of more JSON than this get a progress bar when stderr is a terminal.
        PROGRESS_BYTES = 32 * 1024 * 1024

        # Raised for a bad command line; exits 2.
        class UsageError < StandardError; end

        def self.start(argv, out: $stdout, err: $stderr)
          new(out: out, err: err).run(argv)
        end

        def initialize(out:, err:)
          @out = out
          @err = err
        end

        # @return [Integer] the exit status
        def run(argv)
          return Export.run(argv.drop(1), out: @out, err: @err) if argv.first == "export"

          options = { format: "text", top: DEFAULT_TOP, output: nil, all: false, sites: false }
          parser = option_parser(options)
          args = parser.parse(argv)
          return 0 if options[:help]

          command = args.shift
          raise UsageError, "no command given" if command.nil?
          raise UsageError, "unknown command #{command.inspect}; expected one of #{[*ARITY.keys, 'export'].join(', ')}" unless ARITY.key?(command)
          unless ARITY[command].include?(args.size)
            raise UsageError, "#{command} takes #{ARITY[command].join(' or ')} argument(s), got #{args.size}"
          end

          report = analyse(command, args, options)
          emit(report, options)
          # The text report lists them itself; JSON and HTML may go to a file or a pipe.
          warn_about(report) unless options[:format] == "text" && report["command"] == "leaks" && !options[:output]
          0
        rescue OptionParser::ParseError, UsageError => e
          @err.puts "rack-objectspace: #{e.message}"
          @err.puts "Run `rack-objectspace --help` for usage."
          2
        rescue ArgumentError => e
          # From the native side: a store URL that cannot be used.
          @err.puts "rack-objectspace: #{e.message}"
          2
        rescue Rack::Objectspace::Error, SystemCallError, IOError => e
          @err.puts "rack-objectspace: #{e.message}"
          1
        rescue Interrupt
          @err.puts "rack-objectspace: interrupted"
          130
        rescue StandardError, LoadError => e
          @err.puts "rack-objectspace: #{e.class}: #{e.message}"
          1
        end

        private

        def option_parser(options)
          OptionParser.new do |o|
            o.banner = USAGE
            o.on("-f", "--format FORMAT", FORMATS, "text (default), json or html") { |v| options[:format] = v }
            o.on("-n", "--top N", Integer, "rows per table (default #{DEFAULT_TOP}; 0 for all)") do |v|
              raise UsageError, "--top must be 0 or more, got #{v}" if v.negative?

              options[:top] = v
            end
            o.on("-o", "--output FILE", "write the report to FILE instead of stdout") { |v| options[:output] = v }
            o.on("-a", "--all", "leaks: also sites under the noise floor (< #{NOISE_PER_REQUEST} objects/request " \
                                "or < #{NOISE_OBJECTS} live objects)") { options[:all] = true }
            o.on("--sites", "leaks: one row a growing site of a process, not one finding a leak") { options[:sites] = true }
            o.on("-h", "--help", "show this help") do
              @out.puts o.help
              options[:help] = true
            end
          end
        end

        # Columns of the terminal the text goes to (COLUMNS wins); nil for a file or a pipe.
        def width(options)
          columns = ENV["COLUMNS"].to_i
          return columns if columns.positive?
          return nil if options[:output] || !(@out.respond_to?(:tty?) && @out.tty?)

          require "io/console"
          @out.winsize[1]
        rescue StandardError, LoadError
          nil
        end

        def progress?(paths)
          return false unless @err.respond_to?(:tty?) && @err.tty?

          # gzip shrinks dumps ~14x: judge by the JSON to read, not the bytes stored.
      paths.sum { |p| File.file?(p) ? File.size(p) * (p.end_with?(".gz") ? 14 : 1) : PROGRESS_BYTES } >= PROGRESS_BYTES
        end

        def analyse(command, args, options)
          top = options[:top]
          case command
          when "summary" then Analysis.summary(*args, top: top, progress: progress?(args))
          when "diff" then Analysis.diff(*args, top: top, progress: progress?(args))
          when "leaks" then Analysis.leaks(args[0], top: top, progress: progress?(args), all: options[:all])
          when "ls" then Analysis.ls(args[0])
          end
        end

        def warn_about(report)
          (report["warnings"] || []).each { |w| @err.puts "rack-objectspace: warning: #{w}" }
        end

        def emit(report, options)
          text = case options[:format]
                 when "json" then JSON.pretty_generate(report) + "\n"
                 when "html" then Html.render(report, sites: options[:sites])
                 else Text.render(report, width: width(options), sites: options[:sites])
                 end
          if options[:output]
            File.write(options[:output], text)
            @err.puts "rack-objectspace: wrote #{options[:output]}"
          else
            @out.write(text)
          end
        end
      end
    end
  end
end
