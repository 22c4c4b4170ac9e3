# frozen_string_literal: true

require "io/wait"
require "json"

module Rack
  class Objectspace
    # One dump child: a process forked from the app's, which must leave the app
    # alone. It is forked without the app's fork hooks (`Process._fork`
    # overrides such as ActiveSupport's ForkTracker or an APM agent's, and
    # `fork` overrides, do not run), and its first act (Native::Child.isolate)
    # points every inherited socket at /dev/null (the client's connection, the
    # listener, Redis and database connections), resets TERM, INT, QUIT, HUP,
    # USR1 and USR2 to their default action, and arms an alarm at its deadline;
    # then every pipe of the app's IO objects (a subprocess's stdin that a
    # request served meanwhile holds: the subprocess would wait for the child
    # to exit to see EOF).
    # `$0` names it. The parent reads its report (a JSON line, then any bytes it
    # ships back) by the deadline, else kills it.
    class ForkChild
      # Raised in the parent when a child did not report by its deadline (it is killed).
      class Timeout < Error; end

      # Children run at this nice level (19: only idle CPU).
      NICENESS = 19
      # The child's own alarm goes off this long after the parent's deadline:
      # it ends the child even if the parent is gone.
      ALARM_SLACK = 5

      attr_reader :pid

      def initialize(timeout)
        @timeout = timeout
      end

      # Fork; the child runs `yield(out)` (out: the report pipe's write end) and
      # exit!s with the block's result (an Integer status), never returning.
      # Call with the caller's fork lock held: a child forked meanwhile by another
      # thread would otherwise inherit this child's report pipe.
      def start
        reader, writer = IO.pipe
        [reader, writer].each(&:binmode)
        parent = Process.pid
        @pid = self.class.raw_fork
        if @pid.nil? || @pid.zero?
          status = 1
          begin
            reader.close
            Native::Child.isolate((@timeout + ALARM_SLACK).ceil)
            $0 = "rack-objectspace dump (worker #{parent})"
            Process.setpriority(Process::PRIO_PROCESS, 0, NICENESS)
            Native::Child.blank_pipes(app_descriptors, writer.fileno) # a heap walk: at nice 19
            status = yield(writer)
          ensure
            exit!(status)
          end
        end
        writer.close
        @reader = reader
        @deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout
        @pid
      end

      # In the parent: the child's report (a Hash) and the bytes it shipped (or
      # nil), once it has exited. Raises Timeout (after killing the child) when
      # the deadline passes first.
      def collect
        report = begin
          JSON.parse(read_line.to_s)
        rescue JSON::ParserError
          {}
        end
        bytes = read_bytes(report["ship"]) if report["ok"] && report["ship"]
        @reader.close
        _, status = Process.wait2(@pid)
        [report, bytes, status]
      rescue Timeout
        kill
        raise
      ensure
        @reader.close unless @reader.closed?
      end

      # SIGKILL the child and reap it (it may have exited already).
      def kill
        Process.kill(:KILL, @pid)
      rescue Errno::ESRCH
        nil
      ensure
        begin
          Process.wait(@pid)
        rescue Errno::ECHILD
          nil
        end
      end

      # Process._fork as Ruby defines it, past any override prepended to it (the
      # app's fork hooks wrap Process._fork or Process.fork; neither runs here).
      # Process.fork where there is no _fork (Ruby < 3.1). 0 in the child.
      def self.raw_fork
        return Process.fork unless Process.respond_to?(:_fork)

        method = Process.method(:_fork)
        method = method.super_method while method.super_method && method.owner != Process.singleton_class
        method.call
      end

      private

      # The descriptors of the process's open IO objects.
      def app_descriptors
        ObjectSpace.each_object(IO).filter_map do |io|
          io.fileno unless io.closed?
        rescue IOError # a subclass's own idea of closed
          nil
        end
      end

      def left
        @deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      def wait_readable!
        raise Timeout, "no report from the dump child within #{@timeout} s" unless left.positive? && @reader.wait_readable(left)
      end

      def read_line
        line = +""
        loop do
          wait_readable!
          chunk = @reader.read_nonblock(64 * 1024, exception: false)
          return line if chunk.nil? # EOF: the child died before reporting
          next if chunk == :wait_readable

          line << chunk
          break if line.include?("\n")
        end
        head, rest = line.split("\n", 2)
        @pending = rest.to_s.b
        head
      end

      def read_bytes(size)
        bytes = @pending || +"".b
        while bytes.bytesize < size
          wait_readable!
          chunk = @reader.read_nonblock([size - bytes.bytesize, 1 << 20].min, exception: false)
          break if chunk.nil?
          next if chunk == :wait_readable

          bytes << chunk
        end
        bytes
      end
    end
  end
end
