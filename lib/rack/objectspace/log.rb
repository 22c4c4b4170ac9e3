# frozen_string_literal: true

require "logger"

module Rack
  class Objectspace
    # key=value log lines (`source=rack-objectspace event=dump_stored ... at=info`).
    # Warnings of one kind are logged once per burst: a repeat within
    # `quiet_for` seconds is counted and reported with the next line instead.
    class Log
      def initialize(logger, quiet_for: 10.0)
        @logger = logger
        @quiet_for = quiet_for
        @last = {}
        @suppressed = Hash.new(0)
        @lock = Mutex.new
      end

      # The server's env["rack.logger"], taken from the first request served.
      attr_writer :env_logger

      # Explicit logger, else Rails.logger, else env["rack.logger"], else $stderr.
      def logger
        @logger ||
          (defined?(::Rails) && ::Rails.respond_to?(:logger) && ::Rails.logger) ||
          @env_logger ||
          (@stderr ||= ::Logger.new($stderr, level: ::Logger::INFO))
      end

      def info(event, **fields)
        write(:info, event, fields)
      end

      # The one line at boot that says the middleware is on and how it is set
      # up: mode, dump, store (no credentials), every (with every: nil, dumps
      # come only on demand, through a token, else never), the seconds between
      # the dumps the census asks for (auto_dump), tracer and census.
      def started(config)
        every = config.every || (config.token ? "on_demand" : "never")
        census = { true => "on", sampled: "sampled", false => "off" }.fetch(config.census)
        sample = config.census == :sampled ? { sample_rate: config.sample_rate } : {}
        info("started", mode: config.mode, dump: config.dump, store: self.class.describe_store(config.store),
                        every: every, auto_dump: config.auto_dump&.round || "off", tracer: config.trace || "off",
                        census: census, **sample, pid: Process.pid)
      end

      # Dumps stored, dropped and failed so far, at flush and at exit: one line,
      # never held back as a repeat. At warn when dumps were lost since the last
      # summary; else at info at exit and at debug for a flush (flushing after
      # every request, as a console or a spec does, stays quiet).
      def summary(event, stored:, dropped:, failed:, final: false, **fields)
        lost = dropped + failed
        level = if lost > (@lost_reported || 0) then :warn
                elsif final then :info
                else :debug
                end
        @lost_reported = lost
        write(level, event, { stored: stored, dropped: dropped, failed: failed, **fields })
      end

      # A store for a log line: a URL without user, password or query string
      # (where credentials go), or the class of a []= store (Moneta: its adapter).
      def self.describe_store(store)
        return describe_url(store) if store.is_a?(String)

        inner = store
        inner = inner.adapter while inner.respond_to?(:adapter) && !inner.adapter.equal?(inner)
        inner.equal?(store) ? store.class.name.to_s : "#{store.class.name.to_s.split('::').first}(#{inner.class.name})"
      end

      def self.describe_url(url)
        text = url.sub(%r{\A([a-z][a-z0-9+.-]*://)[^/@]*@}i, "\\1")
        text.sub(/[?#].*\z/m, "")
      end

      def debug(event, **fields)
        write(:debug, event, fields)
      end

      # Logs a warning unless one of the same event was logged in the last
      # `quiet_for` seconds; then it is counted and its count goes out with the next.
      def warn(event, **fields)
        now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        suppressed = @lock.synchronize do
          last = @last[event]
          if last && now - last < @quiet_for
            @suppressed[event] += 1
            next nil
          end
          @last[event] = now
          @suppressed.delete(event) || 0
        end
        return if suppressed.nil?

        fields[:suppressed] = suppressed if suppressed.positive?
        write(:warn, event, fields)
      end

      private

      def write(level, event, fields)
        parts = ["source=rack-objectspace", "event=#{event}"]
        fields.each { |k, v| parts << "#{k}=#{format_value(v)}" }
        parts << "at=#{level}"
        logger.public_send(level, parts.join(" "))
      rescue StandardError
        nil # logging must never fail a request
      end

      def format_value(value)
        text = value.to_s
        text.match?(/[\s"=]/) ? text.inspect : text
      end
    end
  end
end
