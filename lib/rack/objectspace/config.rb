# frozen_string_literal: true

module Rack
  class Objectspace
    # Validated options. Every option is a keyword, else a RACK_OBJECTSPACE_*
    # variable, else a default; anything wrong raises ArgumentError at boot,
    # naming the option, the value and what is accepted.
    class Config
      MODES = %i[fork inline].freeze
      DUMPS = %i[full retained].freeze
      LAYOUTS = %i[dump object].freeze
      TRACERS = %i[native objspace].freeze
      # What a boolean option (or RACK_OBJECTSPACE_* variable) may say.
      TRUE_WORDS = [true, "true", "1", "yes", "on"].freeze
      FALSE_WORDS = [false, "false", "0", "no", "off"].freeze
      DEFAULT_STORE = "file://tmp/objectspace"
      # Seconds a dump child may take (GC, dump, gzip, upload) before it is
      # killed: twice the store's own request timeout (object_store: 30 s).
      DEFAULT_CHILD_TIMEOUT = 60
      # The default of keywords where nil is a meaningful value (every: nil).
      NOT_GIVEN = Object.new.freeze

      attr_reader :store, :store_url, :mode, :dump, :every, :gc, :redact, :trace, :gzip_level,
                  :filter, :paths, :token, :token_header, :max_children, :queue_size,
                  :flush_timeout, :child_timeout, :logger, :layout, :census

      # The defaults a user sees in the README table.
      def self.default_mode
        Process.respond_to?(:fork) ? :fork : :inline
      end

      def initialize(store:, mode:, dump:, every:, gc:, redact:, trace:, gzip_level:, filter:, paths:,
                     token:, token_header:, max_children:, queue_size:, flush_timeout:, child_timeout:, logger:,
                     layout:, census: nil)
        @store = pick(store, "STORE") { DEFAULT_STORE }
        @mode = symbol(:mode, pick(mode, "MODE") { self.class.default_mode }, MODES)
        @dump = symbol(:dump, pick(dump, "DUMP") { :full }, DUMPS)
        @every = every_value(every.equal?(NOT_GIVEN) ? pick(nil, "EVERY") { 1 } : every)
        @gc = boolean(:gc, pick(gc, "GC") { true })
        @redact = boolean(:redact, pick(redact, "REDACT") { true })
        @trace = tracer(trace.nil? ? true : trace)
        @gzip_level = integer(:gzip_level, gzip_level.nil? ? Native::DEFAULT_GZIP_LEVEL : gzip_level, 0..9)
        @filter = callable(:filter, filter)
        @paths = paths_value(paths)
        @token = token_value(pick(token, "TOKEN") { nil })
        @token_header = header_value(token_header || "X-Objectspace-Token")
        @max_children = integer(:max_children, pick(max_children, "MAX_CHILDREN") { 2 }, 1..64)
        @queue_size = integer(:queue_size, pick(queue_size, "QUEUE_SIZE") { 4 }, 1..1024)
        @flush_timeout = seconds(:flush_timeout, pick(flush_timeout, "FLUSH_TIMEOUT") { 30 })
        @child_timeout = seconds(:child_timeout, pick(child_timeout, "CHILD_TIMEOUT") { DEFAULT_CHILD_TIMEOUT })
        fail!(:child_timeout, @child_timeout, "a number of seconds > 0") unless @child_timeout.positive?
        @logger = logger_value(logger)
        @layout = symbol(:layout, layout || :dump, LAYOUTS)
        @census = census_value(pick(census, "CENSUS") { nil })
        check_store
        fail!(:every, nil, "a positive Integer when token: is not set and census: is off (nil dumps only on demand, with the token)") if @every.nil? && @token.nil? && !@census
        fail!(:trace, false, "true, :native or :objspace with dump: :retained (it keeps objects by allocation generation)") if @dump == :retained && !@trace
        freeze
      end

      # True when a fork child can write to the store itself (file://, s3:// ...);
      # false when the parent must (memory://, Hash, Moneta ...).
      def child_writes?
        !@store_url.nil? && @shared_url
      end

      private

      def pick(value, env)
        return value unless value.nil?

        from_env = ENV["RACK_OBJECTSPACE_#{env}"]
        return from_env unless from_env.nil? || from_env.empty?

        yield
      end

      def fail!(option, value, accepted)
        raise ArgumentError, "#{option}: must be #{accepted}, got #{value.inspect}"
      end

      def symbol(option, value, allowed)
        sym = value.respond_to?(:to_sym) ? value.to_sym : value
        return sym if allowed.include?(sym)

        fail!(option, value, "one of #{allowed.map(&:inspect).join(', ')}")
      end

      def boolean(option, value)
        return true if TRUE_WORDS.include?(value)
        return false if FALSE_WORDS.include?(value)

        fail!(option, value, "true or false")
      end

      # true picks the tracer that costs the app least: :native (a light NEWOBJ
      # hook; the dump child filters a whole dump_all) in fork mode, and for
      # inline retained dumps :objspace (dearer per allocation, but its
      # dump_all(since:) formats only new objects, on the request thread).
      def tracer(value)
        return nil if FALSE_WORDS.include?(value)
        return @mode == :inline && @dump == :retained ? :objspace : :native if TRUE_WORDS.include?(value)

        symbol(:trace, value, [true, false, *TRACERS])
      end

      # The census needs the native tracer: on by default wherever it runs;
      # census: true with another tracer is an error, not a silent no-op.
      def census_value(value)
        return @trace == :native if value.nil?

        on = boolean(:census, value)
        fail!(:census, value, "false unless trace: is true or :native (the census counts with the native tracer)") if on && @trace != :native
        on
      end

      def integer(option, value, range)
        int = value.is_a?(String) && value.match?(/\A\d+\z/) ? value.to_i : value
        return int if int.is_a?(Integer) && range.cover?(int)

        fail!(option, value, "an Integer in #{range}")
      end

      def seconds(option, value)
        num = value.is_a?(String) && value.match?(/\A\d+(\.\d+)?\z/) ? value.to_f : value
        return num.to_f if num.is_a?(Numeric) && num >= 0

        fail!(option, value, "a number of seconds >= 0")
      end

      def every_value(value)
        return nil if value.nil? || value == "never"

        int = value.is_a?(String) && value.match?(/\A\d+\z/) ? value.to_i : value
        return int if int.is_a?(Integer) && int.positive?

        fail!(:every, value, "a positive Integer (dump every Nth request), or nil (only on demand with token:)")
      end

      def callable(option, value)
        return nil if value.nil?
        return value if value.respond_to?(:call)

        fail!(option, value, "nil or a callable taking the Rack env")
      end

      def paths_value(value)
        return nil if value.nil?

        list = Array(value)
        bad = list.find { |p| !(p.is_a?(String) && p.start_with?("/")) && !p.is_a?(Regexp) }
        fail!(:paths, bad, "path prefixes (Strings starting with \"/\") or Regexps") if bad || list.empty?
        list.freeze
      end

      def token_value(value)
        return nil if value.nil?
        return value.dup.freeze if value.is_a?(String) && value.bytesize >= 16

        fail!(:token, value.is_a?(String) ? "#{value.bytesize}-byte String" : value,
              "a secret String of at least 16 bytes (e.g. SecureRandom.hex(16)), or nil")
      end

      def header_value(value)
        return "HTTP_#{value.upcase.tr('-', '_')}" if value.is_a?(String) && value.match?(/\A[A-Za-z0-9-]+\z/)

        fail!(:token_header, value, "an HTTP header name such as \"X-Objectspace-Token\"")
      end

      def logger_value(value)
        return value if value.nil? || (value.respond_to?(:info) && value.respond_to?(:warn))

        fail!(:logger, value, "nil or a Logger (responding to #info, #warn, #debug)")
      end

      def check_store
        case @store
        when String
          @store_url = @store
          @shared_url = Native.check_store(@store)
        else
          return if @store.respond_to?(:[]=)

          fail!(:store, @store, "a store URL (#{STORE_SCHEMES}) or an object responding to []= (a Hash, a Moneta store)")
        end
        fail!(:layout, @layout, ":dump for URL stores (:object is for []= stores)") if @store_url && @layout == :object
      end

      STORE_SCHEMES = "file://DIR, memory://NAME, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX"
      private_constant :STORE_SCHEMES
    end
  end
end
