# frozen_string_literal: true

module Rack
  class Objectspace
    # The one table of Rack::Objectspace's options. The middleware's keywords,
    # their defaults, RACK_OBJECTSPACE_* variables and checks (Config), the
    # Railtie's config.rack_objectspace keys and README.md's options table
    # (Options.markdown, `rake readme:options`) all come from TABLE.
    module Options
      # Raised by a check when a value is not accepted; Options.resolve turns
      # it into an ArgumentError naming the option.
      class Invalid < StandardError
        attr_reader :accepted, :shown

        def initialize(accepted, shown)
          @accepted = accepted
          @shown = shown
          super(accepted)
        end
      end

      # One option. `default` is a value, or a lambda of the options resolved
      # so far (the table is in dependency order); `check` takes the value
      # given (keyword, else variable, else default) and the options resolved
      # so far, and returns the value the middleware uses or raises Invalid;
      # `shown_default` is the README's Default cell when `default.inspect` is
      # not it; `nil_is_a_value`: `every: nil` means "no every", not "default".
      Option = Struct.new(:name, :default, :env, :check, :doc, :shown_default, :nil_is_a_value,
                          keyword_init: true) do
        # The keyword's value, else the variable's (unset or empty: none), else the default.
        def given(keywords, resolved)
          value = keywords[name]
          return value unless value.nil? && !(nil_is_a_value && keywords.key?(name))

          from_env = env && ENV.fetch(env, nil)
          return from_env unless from_env.nil? || from_env.empty?

          default.is_a?(Proc) ? default.call(resolved) : default
        end

        # The row of README.md's options table.
        def markdown_row
          cells = ["`#{name}:`", shown_default || "`#{default.inspect}`", env ? "`#{env}`" : "", doc]
          "|#{cells.map { |cell| cell.empty? ? ' ' : " #{cell} " }.join('|')}|"
        end
      end

      # What a boolean option (or RACK_OBJECTSPACE_* variable) may say.
      TRUE_WORDS = [true, "true", "1", "yes", "on"].freeze
      FALSE_WORDS = [false, "false", "0", "no", "off"].freeze
      STORE_SCHEMES = "file://DIR, memory://NAME, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX"
      # Seconds a dump child may take (GC, dump, gzip, upload) before it is
      # killed: twice the store's own request timeout (object_store: 30 s).
      DEFAULT_CHILD_TIMEOUT = 60
      # Seconds between two dumps the census asks for (auto_dump: true): a
      # fork child's full dump every 10 minutes at most, while growth lasts.
      DEFAULT_AUTO_DUMP_INTERVAL = 600.0

      module_function

      def invalid!(accepted, shown)
        raise Invalid.new(accepted, shown)
      end

      # A Symbol (or a String naming one) among `allowed`.
      def one_of(*allowed)
        lambda do |value, _|
          sym = value.respond_to?(:to_sym) ? value.to_sym : value
          allowed.include?(sym) ? sym : invalid!("one of #{allowed.map(&:inspect).join(', ')}", value)
        end
      end

      def boolean
        lambda do |value, _|
          next true if TRUE_WORDS.include?(value)
          next false if FALSE_WORDS.include?(value)

          invalid!("true or false", value)
        end
      end

      # An Integer (or a String of digits) in `range`.
      def integer(range)
        lambda do |value, _|
          int = value.is_a?(String) && value.match?(/\A\d+\z/) ? value.to_i : value
          int.is_a?(Integer) && range.cover?(int) ? int : invalid!("an Integer in #{range}", value)
        end
      end

      # A Float number of seconds >= 0 (> 0 if `positive`).
      def seconds(positive: false)
        lambda do |value, _|
          num = value.is_a?(String) && value.match?(/\A\d+(\.\d+)?\z/) ? value.to_f : value
          invalid!("a number of seconds >= 0", value) unless num.is_a?(Numeric) && num >= 0
          invalid!("a number of seconds > 0", num.to_f) if positive && !num.positive?
          num.to_f
        end
      end

      def store(value, _)
        return value if value.is_a?(String) || value.respond_to?(:[]=)

        invalid!("a store URL (#{STORE_SCHEMES}) or an object responding to []= (a Hash, a Moneta store)", value)
      end

      def every(value, _)
        return nil if value.nil? || value == "never"

        int = value.is_a?(String) && value.match?(/\A\d+\z/) ? value.to_i : value
        return int if int.is_a?(Integer) && int.positive?

        invalid!("a positive Integer (dump every Nth request), or nil (only on demand with token:)", value)
      end

      def paths(value, _)
        return nil if value.nil?

        list = Array(value)
        ok = ->(p) { (p.is_a?(String) && p.start_with?("/")) || p.is_a?(Regexp) }
        return list.freeze if list.any? && list.all?(&ok)

        invalid!("path prefixes (Strings starting with \"/\") or Regexps", list.find { |p| !ok.call(p) })
      end

      def filter(value, _)
        return value if value.nil? || value.respond_to?(:call)

        invalid!("nil or a callable taking the Rack env", value)
      end

      def token(value, _)
        return nil if value.nil?
        return value.dup.freeze if value.is_a?(String) && value.bytesize >= 16

        invalid!("a secret String of at least 16 bytes (e.g. SecureRandom.hex(16)), or nil",
                 value.is_a?(String) ? "#{value.bytesize}-byte String" : value)
      end

      # The header's Rack env key: "X-Objectspace-Token" -> "HTTP_X_OBJECTSPACE_TOKEN".
      def token_header(value, _)
        return "HTTP_#{value.upcase.tr('-', '_')}" if value.is_a?(String) && value.match?(/\A[A-Za-z0-9-]+\z/)

        invalid!("an HTTP header name such as \"X-Objectspace-Token\"", value)
      end

      # true picks the tracer that costs the app least: :native (a light NEWOBJ
      # hook; the dump child filters a whole dump_all) in fork mode, and for
      # inline retained dumps :objspace (dearer per allocation, but its
      # dump_all(since:) formats only new objects, on the request thread).
      # false: nil (no tracer).
      def trace(value, resolved)
        return nil if FALSE_WORDS.include?(value)
        return resolved[:mode] == :inline && resolved[:dump] == :retained ? :objspace : :native if TRUE_WORDS.include?(value)

        one_of(true, false, :native, :objspace).call(value, resolved)
      end

      def logger(value, _)
        return value if value.nil? || (value.respond_to?(:info) && value.respond_to?(:warn))

        invalid!("nil or a Logger (responding to #info, #warn, #debug)", value)
      end

      # The census needs the native tracer: on by default wherever it runs;
      # census: true with another tracer is an error, not a silent no-op.
      # `:sampled` records one request in `sample_rate:` (see
      # ext/rack_objectspace/src/windows.rs). Retained dumps keep objects by
      # the generation the tracer recorded: with only a sample recorded they
      # would lose the rest, so the two do not go together.
      def census(value, resolved)
        on = value.respond_to?(:to_sym) && value.to_sym == :sampled ? :sampled : boolean_or_sampled(value, resolved)
        if on && resolved[:trace] != :native
          invalid!("false unless trace: is true or :native (the census counts with the native tracer)", value)
        end
        on
      end

      # true: the census's own dumps, at most one per DEFAULT_AUTO_DUMP_INTERVAL
      # seconds; a number: that many seconds apart; false: none. Needs the census.
      def auto_dump(value, resolved)
        return nil if FALSE_WORDS.include?(value)

        interval = TRUE_WORDS.include?(value) ? DEFAULT_AUTO_DUMP_INTERVAL : auto_dump_interval(value)
        unless resolved[:census]
          invalid!("false unless the census is on (auto dumps are taken when the census sees growth)", value)
        end
        interval
      end

      def auto_dump_interval(value)
        seconds(positive: true).call(value, nil)
      rescue Invalid
        invalid!("true, false or the least number of seconds between two auto dumps (> 0)", value)
      end

      def boolean_or_sampled(value, resolved)
        boolean.call(value, resolved)
      rescue Invalid
        invalid!("true (every allocation), :sampled (one in sample_rate:) or false", value)
      end

      # An Integer or nil (a random seed).
      def seed(value, _)
        return nil if value.nil?

        int = value.is_a?(String) && value.match?(/\A\d+\z/) ? value.to_i : value
        int.is_a?(Integer) && int >= 0 && int < 2**64 ? int : invalid!("nil (random) or an Integer >= 0", value)
      end

      def check(name)
        method(name).to_proc
      end

      # In README order, which is also the order they are resolved in: trace
      # after mode and dump, census after trace, every and auto_dump after census.
      TABLE = [
        Option.new(name: :store, default: "file://tmp/objectspace", env: "RACK_OBJECTSPACE_STORE", check: check(:store),
                   doc: "A store URL (`file://`, `memory://`, `s3://`, `gs://`, `az://`) or any object with `[]=` " \
                        "(Hash, Moneta)."),
        Option.new(name: :mode, default: ->(_) { Process.respond_to?(:fork) ? :fork : :inline },
                   shown_default: "`:fork` (`:inline` where fork is missing)", env: "RACK_OBJECTSPACE_MODE",
                   check: one_of(:fork, :inline),
                   doc: "`:fork`: the child process does GC, dump, gzip, upload. `:inline`: dump in-process, " \
                        "store off-thread."),
        Option.new(name: :dump, default: :full, env: "RACK_OBJECTSPACE_DUMP", check: one_of(:full, :retained),
                   doc: "`:full` heap, or `:retained`: objects allocated since the first dumped request that " \
                        "survived GC."),
        Option.new(name: :trace, default: true, check: check(:trace),
                   doc: "Record each allocation's file, line and GC generation, so dumps name the line that " \
                        "allocated each object (`dump: :retained` needs it). `true` picks `:native`, our own " \
                        "allocation hook (~5x cheaper per allocation than objspace's, see " \
                        "[docs/census.md](docs/census.md#allocation-tracing-where-the-census-starts)), except for inline retained dumps, which get " \
                        "`:objspace` (its `dump_all(since:)` formats only the new objects, on the request thread). " \
                        "`false`: off."),
        Option.new(name: :census, default: ->(resolved) { resolved[:trace] == :native },
                   shown_default: "`true` with the native tracer", env: "RACK_OBJECTSPACE_CENSUS", check: check(:census),
                   doc: "Live objects per allocation site at every request, stored in batches without a dump (see " \
                        "[docs/census.md](docs/census.md)). `false`: off. `true` with " \
                        "`trace: false` or `:objspace` is an error. With the census on, `every: nil` needs no " \
                        "`token:`. `:sampled`: record one request in `sample_rate:` and scale the counts (for " \
                        "every pod in production; see [docs/census.md](docs/census.md#the-sampled-census))."),
        Option.new(name: :sample_rate, default: Native::Tracer::DEFAULT_SAMPLE_RATE, env: "RACK_OBJECTSPACE_SAMPLE_RATE",
                   check: integer(1..1_000_000),
                   doc: "With `census: :sampled`: one request in this many has its allocations recorded (on " \
                        "average, by a random countdown, as Go's `MemProfileRate` and Datadog's heap profiler count " \
                        "down to an allocation); counts are scaled by it and a count C is within about " \
                        "±1.96·sqrt(rate·C) (95%)."),
        Option.new(name: :sample_seed, default: nil, env: "RACK_OBJECTSPACE_SAMPLE_SEED", check: check(:seed),
                   doc: "With `census: :sampled`: an Integer seeds the countdown (the same requests are chosen " \
                        "each run); `nil`: random."),
        Option.new(name: :every, default: ->(resolved) { resolved[:census] ? nil : 1 },
                   shown_default: "`nil` with the census on, else `1`", env: "RACK_OBJECTSPACE_EVERY",
                   check: check(:every), nil_is_a_value: true,
                   doc: "Dump every Nth eligible request (the 1st, N+1th, ...). `nil`: no dumps by count; the census " \
                        "asks for its own (`auto_dump:`), and `token:` takes one on demand."),
        Option.new(name: :auto_dump, default: ->(resolved) { resolved[:census] && resolved[:every].nil? },
                   shown_default: "`true` with the census on and `every: nil`", env: "RACK_OBJECTSPACE_AUTO_DUMP",
                   check: check(:auto_dump),
                   doc: "When the census sees a site keep growing (a rise after 8 GCs that raised it, none lowering " \
                        "it), a full dump (fork child, " \
                        "redacted) after the next request, for \"what holds it\": the first at once, then at most one " \
                        "per #{DEFAULT_AUTO_DUMP_INTERVAL.to_i} s while growth lasts. A number: those seconds apart instead. `false`: off."),
        Option.new(name: :paths, default: nil, check: check(:paths),
                   doc: "Only requests whose path starts with one of these Strings or matches one of these Regexps."),
        Option.new(name: :filter, default: nil, check: check(:filter),
                   doc: "Only requests for which `filter.call(env)` is truthy."),
        Option.new(name: :token, default: nil, env: "RACK_OBJECTSPACE_TOKEN", check: check(:token),
                   doc: "A secret (>= 16 bytes). A request carrying it in `token_header` is dumped; a wrong token " \
                        "is refused (logged, not dumped). Compared in constant time."),
        Option.new(name: :token_header, default: "X-Objectspace-Token", check: check(:token_header),
                   doc: "The header for `token:`."),
        Option.new(name: :gc, default: true, env: "RACK_OBJECTSPACE_GC", check: boolean,
                   doc: "Run a full GC before each dump."),
        Option.new(name: :redact, default: true, env: "RACK_OBJECTSPACE_REDACT", check: boolean,
                   doc: "Drop every string `value` from dumps (bytesize stays). `false` stores them: secrets!"),
        Option.new(name: :gzip_level, default: Native::DEFAULT_GZIP_LEVEL, check: integer(0..9),
                   doc: "0-9. Level 1 keeps pace with `dump_all`; 6 makes the dump ~3x slower."),
        Option.new(name: :max_children, default: 2, env: "RACK_OBJECTSPACE_MAX_CHILDREN", check: integer(1..64),
                   doc: "Fork mode: dump children alive at once; more are dropped and counted."),
        Option.new(name: :child_timeout, default: DEFAULT_CHILD_TIMEOUT, env: "RACK_OBJECTSPACE_CHILD_TIMEOUT",
                   check: seconds(positive: true),
                   doc: "Fork mode: seconds a dump child may take; then it is killed, counted `failed` and logged, " \
                        "and its slot comes back."),
        Option.new(name: :queue_size, default: 4, env: "RACK_OBJECTSPACE_QUEUE_SIZE", check: integer(1..1024),
                   doc: "Dumps waiting for the store; more are dropped and counted, never buffered without limit."),
        Option.new(name: :flush_timeout, default: 30, env: "RACK_OBJECTSPACE_FLUSH_TIMEOUT", check: seconds,
                   doc: "Seconds given to pending dumps at process exit; then they are abandoned with a log line."),
        Option.new(name: :logger, default: nil, shown_default: "`Rails.logger`, `env[\"rack.logger\"]`, `$stderr`",
                   check: check(:logger), doc: "Where `key=value` log lines go."),
        Option.new(name: :layout, default: :dump, check: one_of(:dump, :object),
                   doc: "`[]=` stores only: `:object` also writes each record under `<dump-key>/<address>`, as " \
                        "the original gem did.")
      ].each(&:freeze).freeze

      # The keywords Rack::Objectspace.new takes (besides the app).
      NAMES = TABLE.map(&:name).freeze

      # Each option's value: the keyword, else its RACK_OBJECTSPACE_* variable,
      # else its default, checked.
      # @param keywords [Hash{Symbol => Object}] the keywords given to Rack::Objectspace.new
      # @return [Hash{Symbol => Object}] every option, by name
      # @raise [ArgumentError] for an unknown keyword (naming it and the known ones) or a bad value
      #   (naming the option, the value and what is accepted)
      def resolve(keywords)
        unknown = keywords.keys - NAMES
        unless unknown.empty?
          raise ArgumentError, "unknown keyword#{'s' if unknown.size > 1}: #{unknown.map(&:inspect).join(', ')}; " \
                               "Rack::Objectspace takes #{NAMES.map { |n| "#{n}:" }.join(', ')}"
        end
        TABLE.each_with_object({}) do |option, resolved|
          value = option.given(keywords, resolved)
          begin
            resolved[option.name] = option.check.call(value, resolved)
          rescue Invalid => e
            fail!(option.name, e.shown, e.accepted)
          end
        end
      end

      def fail!(name, value, accepted)
        raise ArgumentError, "#{name}: must be #{accepted}, got #{value.inspect}"
      end

      # README.md's options table, in Markdown.
      # @return [String]
      def markdown
        ["| Option | Default | Env | Description |", "|---|---|---|---|", *TABLE.map(&:markdown_row)].join("\n")
      end

      # Where README.md keeps its options table: between a line starting
      # `<!-- options` and a line `<!-- /options -->`.
      README_BLOCK = %r{^(<!-- options\b[^\n]*-->\n)(.*?)\n(<!-- /options -->)$}m.freeze

      # @return [String, nil] the options table in `readme`, nil without the markers
      def readme_table(readme)
        readme[README_BLOCK, 2]
      end

      # @return [String] `readme` with `table` between its markers
      # @raise [ArgumentError] when `readme` has no markers
      def in_readme(readme, table)
        raise ArgumentError, "no <!-- options --> ... <!-- /options --> block in the README" unless readme.match?(README_BLOCK)

        readme.sub(README_BLOCK) { "#{Regexp.last_match(1)}#{table}\n#{Regexp.last_match(3)}" }
      end
    end
  end
end
