# frozen_string_literal: true

require "monitor"
require "objspace"
require "rack"
require "rack/body_proxy"
require "rack/utils"

require_relative "objectspace/native"
require_relative "objectspace/config"
require_relative "objectspace/log"
require_relative "objectspace/dumper"
require_relative "objectspace/census"

module Rack
  # Rack middleware that dumps the Ruby heap after requests and stores the dumps,
  # so that `rack-objectspace leaks` can name the file:line that leaks.
  #
  # @example config.ru
  #   use Rack::Objectspace, store: "file://tmp/objectspace", dump: :retained
  # @example Rails
  #   config.middleware.insert_after ActionDispatch::Static, Rack::Objectspace, store: Moneta.new(:Redis)
  class Objectspace
    # @param app [#call] the Rack app
    # @param options [Hash] the options of Options::TABLE (README.md "Configuration"): store:, mode:, dump:,
    #   every:, ...; each one not given comes from its RACK_OBJECTSPACE_* variable, else its default
    # @raise [ArgumentError] for an unknown keyword (naming the known ones) or any bad option, naming it, the
    #   value and what is accepted
    def initialize(app, **options)
      @app = app
      @config = Config.new(**options)
      @log = Log.new(@config.logger)
      @dumper = Dumper.new(@config, @log)
      @requests = 0
      @served = 0 # every request this process served, dumped or not (the dump metadata's `requests`)
      @lock = Mutex.new
      # Tracing, the census's work and the exit flush start with the first
      # request this process serves (see #serving): a process that builds the
      # middleware stack and never serves (rake, the console, Sidekiq, a
      # preloading puma master) pays nothing.
      @serving_pid = nil
      @census = Census.new(@config, @log, @dumper) if @config.census
      @sampled = @config.census == :sampled
      # What #dump? reads on every request, kept here (the config is frozen).
      @token = @config.token
      @every = @config.every
      @auto_dump = @census && @config.auto_dump
      # Whether #dump? must be asked on every request (a token, a count);
      # else only when the census asked for a dump.
      @dump_check = !(@token.nil? && @every.nil?)
      @log.started(@config)
    end

    # @return [Config] the validated options
    attr_reader :config

    def call(env)
      # The request's number in this process: the census's when it is on (the
      # tracer stamps each object with it, "request": N in dumps), else ours.
      served = @census&.request(env) || begin_request(env)
      return serve(env, served) unless @sampled

      # The sampled census may have opened a window for this request: it
      # closes when the app returns (what the body does as it is sent is left out).
      begin
        serve(env, served)
      ensure
        Native::Tracer.end_request
      end
    end

    # Block until every dump taken so far is stored or has failed (fork children
    # reaped), or `timeout` seconds pass.
    # @return [Hash] #stats
    def flush(timeout = 30)
      @census&.flush(timeout)
      with_census(@dumper.flush(timeout))
    end

    # @return [Hash] counts for this process: :dumped, :stored, :failed, :dropped, :pending
    #   (dumps), and :census (Census#stats) when the census is on
    def stats
      with_census(@dumper.stats)
    end

    private

    def serve(env, served)
      trigger = dump?(env) if @dump_check || (@auto_dump && @census.dump_due)
      return @app.call(env) unless trigger

      request = {
        method: utf8(env["REQUEST_METHOD"], 16),
        path: request_path(env),
        started_at_ms: (Time.now.to_f * 1000).to_i,
        gc_generation: GC.count,
        requests: served,
        trigger: trigger
      }
      # What the census asks for is a full dump: paths need the old objects
      # that hold the new ones, whatever `dump:` says.
      if trigger == :census
        request[:dump] = :full
      else
        @dumper.begin_request(request[:gc_generation])
      end
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      status, headers, body = @app.call(env)
      request[:status] = status.to_i
      request[:request_ms] = ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000).round(1)
      # The dump waits for the response to be out, so that its own objects are
      # not mistaken for retained ones: on a server that offers
      # rack.response_finished (Rack 3), when the server says so (an outer
      # middleware that replaces the body cannot skip it); else when the body
      # is closed.
      finished = env["rack.response_finished"]
      if finished.respond_to?(:<<)
        finished << proc { |*| @dumper.dump(request) }
        [status, headers, body]
      else
        [status, headers, Rack::BodyProxy.new(body) { @dumper.dump(request) }]
      end
    end

    # The request's number when the census gave none: without the census, or
    # on this process's first request (the census starts serving it).
    def begin_request(env)
      serving(env) unless @serving_pid == Native.pid # Process.pid is a system call
      return @lock.synchronize { @served += 1 } unless @census

      @census.start_process
      @census.request(env)
    end

    # The first request served by this process: start the tracer and the exit
    # flush (once per process; a forked worker starts its own).
    def serving(env)
      @lock.synchronize do
        return if @serving_pid == Process.pid

        @log.env_logger = env["rack.logger"]
        case @config.trace
        when :native
          @log.warn("tracer_refused", reason: Native::Tracer.refusal) unless Native::Tracer.start
        when :objspace then ObjectSpace.trace_object_allocations_start
        end
        self.class.send(:flush_at_exit, @dumper, @census, @config.flush_timeout)
        @served = 0 # a forked worker counts its own requests
        @serving_pid = Process.pid
      end
    end

    # A block made here closes over these three only: one made in #serving
    # would hold the middleware (the app and all it holds) and the env of the
    # request that registered it, until exit.
    def self.flush_at_exit(dumper, census, timeout)
      at_exit { dumper.shutdown(timeout) }
      at_exit { census.shutdown(timeout) } if census
    end
    private_class_method :flush_at_exit

    def with_census(stats)
      @census ? stats.merge(census: @census.stats) : stats
    end

    # Why this request is dumped (:token, :census, :every), or nil.
    def dump?(env)
      if @token # every request asks: no call when no token is set
        triggered = trigger(env)
        return triggered && :token unless triggered.nil?
      end
      return :census if @auto_dump && @census.dump_due?
      return nil if @every.nil?
      return nil if @config.paths && !path_matches?(env["PATH_INFO"].to_s)
      return nil if @config.filter && !@config.filter.call(env)

      n = @lock.synchronize { @requests += 1 }
      :every if ((n - 1) % @every).zero?
    end

    # With a token set: true: a valid token asked for a dump; false: a token was
    # sent but is wrong; nil: none was sent.
    def trigger(env)
      given = env[@config.token_header]
      return nil if given.nil?
      return true if Rack::Utils.secure_compare(given.to_s, @token)

      @log.warn("trigger_refused", path: env["PATH_INFO"])
      false
    end

    # SCRIPT_NAME + PATH_INFO as valid UTF-8 (the key and metadata are JSON/UTF-8),
    # at most 2 KB; the query string is left out, it often carries tokens.
    def request_path(env)
      utf8("#{env['SCRIPT_NAME']}#{env['PATH_INFO']}", 2048)
    end

    def utf8(text, max_bytes)
      text.to_s.byteslice(0, max_bytes).force_encoding(Encoding::UTF_8).scrub("?")
    end

    def path_matches?(path)
      @config.paths.any? { |p| p.is_a?(Regexp) ? p.match?(path) : path.start_with?(p) }
    end
  end
end

require_relative "objectspace/railtie" if defined?(::Rails::Railtie)
