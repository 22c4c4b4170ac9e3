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
