# frozen_string_literal: true

require "json"
require "socket"
require "securerandom"

require_relative "fork_child"
require_relative "store_queue"

module Rack
  class Objectspace
    # Takes dumps and sees them stored. Per-process state (sequence, baseline,
    # writer, children, threads) starts afresh in a process forked from the one
    # that built it (puma workers), because none of it survives a fork.
    class Dumper
      # Per-process state; rebuilt when Process.pid changes.
      class ProcessState
        attr_reader :pid, :children, :stats
        attr_accessor :seq, :baseline, :writer, :queue

        def initialize
          @pid = Process.pid
          @seq = 0
          @baseline = nil
          @children = {} # pid => reaper Thread
          @stats = Hash.new(0)
        end
      end

      STAT_KEYS = %i[dumped stored failed dropped pending].freeze

      def initialize(config, log)
        @config = config
        @log = log
        @host = Socket.gethostname
        @lock = Monitor.new
        @fork_lock = Mutex.new
        @state = ProcessState.new
      end

      # Called when a request that will be dumped begins: records the retained
      # baseline (the GC generation at which the first dumped request began).
      def begin_request(gc_generation)
        state { |s| s.baseline ||= gc_generation }
      end

      # Take one dump of the heap for a finished request. Never raises.
      def dump(request)
        dump_key, meta_key, meta = prepare(request)
        @config.mode == :fork ? fork_dump(dump_key, meta_key, meta) : inline_dump(dump_key, meta_key, meta)
      rescue StandardError => e
        count(:failed)
        @log.warn("dump_failed", error: "#{e.class}: #{e.message}", path: request[:path])
      ensure
        report_writer_errors
      end

      # Wait up to `timeout` seconds for every dump taken so far; returns #stats.
      def flush(timeout)
        deadline = now + timeout
        children = state { |s| s.children.values }
        children.each { |thread| thread.join([deadline - now, 0].max) }
        state(&:queue)&.wait_idle(deadline)
        writer = state(&:writer)
        writer&.flush([deadline - now, 0].max)
        report_writer_errors
        stats.tap { |st| @log.summary("dump_summary", final: @exiting == Process.pid, **st) }
      end

      # `{dumped:, stored:, failed:, dropped:, pending:}` for this process.
      def stats
        s = state { |st| st.stats.dup.merge(pending: st.children.size + (st.queue&.pending || 0)) }
        writer = state(&:writer)
        if writer
          w = writer.stats
          s[:stored] += w[:stored]
          s[:failed] += w[:failed]
          s[:dropped] += w[:dropped]
          s[:pending] += w[:pending]
        end
        STAT_KEYS.to_h { |k| [k, s[k]] }
      end

      # at_exit: flush up to the deadline, then say what was abandoned.
      def shutdown(timeout)
        return unless @state.pid == Process.pid

        @exiting = Process.pid
        result = flush(timeout)
        return if result[:pending].zero?

        # Children still at work would outlive us (reparented to init) until the
        # store times out: the deadline is theirs too.
        children = state { |s| s.children.keys }
        children.each do |pid|
          Process.kill(:KILL, pid)
        rescue Errno::ESRCH
          nil
        end
        @log.warn("flush_abandoned", pending: result[:pending], killed: children.size, timeout: timeout)
      end

      private

      def now
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      def ms_since(start)
        ((now - start) * 1000).round(1)
      end

      # The state of this process, fresh after a fork; yields it under the lock.
      def state
        @lock.synchronize do
          @state = ProcessState.new if @state.pid != Process.pid
          yield @state
        end
      end

      def count(stat, by = 1)
        state { |s| s.stats[stat] += by }
      end

      def prepare(request)
        pid = Process.pid
        seq, baseline = state { |s| [s.seq += 1, s.baseline] }
        kind = request[:dump] || @config.dump
        since = kind == :retained ? baseline : nil
        dump_key, meta_key = Native.dump_keys(@host, pid, seq, request[:started_at_ms], request[:method].to_s,
                                              request[:path].to_s, SecureRandom.random_number(2**32))
        meta = {
          version: 1, key: dump_key, host: @host, pid: pid, seq: seq,
          request: { method: request[:method], path: request[:path], status: request[:status] },
          started_at_ms: request[:started_at_ms], gc_generation: request[:gc_generation], requests: request[:requests],
          trigger: request[:trigger], baseline_generation: since, dump: kind, mode: @config.mode, redacted: @config.redact,
          trace: @config.trace || false, tracer: (Native::Tracer.stats if @config.trace == :native),
          timings_ms: { request: request[:request_ms] }
        }
        [dump_key, meta_key, meta]
      end

      # GC, then ObjectSpace.dump_all into the pipeline's pipe; returns the Native::Dump.
      # With trace: :native the dump is whole: the pipeline adds allocation sites
      # from Native::Tracer and, for a retained dump, keeps only objects allocated
      # since the baseline generation. With :objspace, dump_all(since:) does that.
      #
      # rss_base (fork children): the RSS at which the peak was reset; the
      # metadata then says how far the dump took the child's peak above it.
      def take(pipeline, meta, rss_base = nil)
        started = now
        GC.start if @config.gc
        meta[:timings_ms][:gc] = ms_since(started) if @config.gc
        started = now
        # The pipeline owns the write end (so that a fork by another thread can
        # let go of it, see docs/internals.md); Ruby only writes into it.
        io = IO.for_fd(pipeline.write_fd, autoclose: false)
        io.binmode
        broken = nil
        # No GC while dump_all walks the heap (the heap may grow, not be swept).
        gc_was_disabled = GC.disable
        begin
          since = meta[:baseline_generation]
          args = since && @config.trace == :objspace ? { since: since } : {}
          dump_all(io, args, meta)
        rescue Errno::EPIPE => e
          broken = e # the reader stopped: its own error (from #finish) says why
        ensure
          GC.enable unless gc_was_disabled
          begin
            io.flush
          rescue Errno::EPIPE
            nil
          end
          pipeline.close_write
        end
        meta[:timings_ms][:dump] = ms_since(started)
        peak = rss_base && status_kb("VmHWM")
        meta[:child_peak_rss_growth_kb] = peak - rss_base if peak
        dump = pipeline.finish(JSON.generate(meta))
        raise broken if broken

        dump
      end

      # Ruby < 3.4's dump_all, streaming to an IO, can switch threads in the
      # middle of an object's mark function and crash when another thread
      # changes what it was walking (ruby/ruby#12285; seen here as a SEGV in
      # reachable_objects_from with puma-like threads). Where other threads are
      # alive (inline mode in a threaded server) the dump is taken into a String,
      # where no switch happens, and then written to the pipe: safe, but held
      # whole. A fork child has one thread and always streams.
      SWITCH_SAFE_IO = Gem::Version.new(RUBY_VERSION) >= Gem::Version.new("3.4")
      private_constant :SWITCH_SAFE_IO

      def dump_all(io, args, meta)
        if SWITCH_SAFE_IO || Thread.list.size == 1
          ObjectSpace.dump_all(output: io, **args)
        else
          meta[:buffered] = true
          json = ObjectSpace.dump_all(output: :string, **args)
          io.write(json)
        end
      end

      def new_pipeline(meta, dump_key = nil, meta_key = nil)
        native = @config.trace == :native
        options = { redact: @config.redact, gzip_level: @config.gzip_level, sites: native,
                    since: native ? meta[:baseline_generation] : nil }
        if dump_key
          Native::Pipeline.streaming(**options, url: @config.store_url, key: dump_key, meta_key: meta_key)
        else
          Native::Pipeline.new(**options)
        end
      end

      # Two ObjectSpace.dump_all running at once crash Ruby 3.1 (SEGV in _dump_all)
      # or deadlock: one inline dump per process at a time, others dropped and counted.
      INLINE_DUMP = Mutex.new
      private_constant :INLINE_DUMP

      def inline_dump(dump_key, meta_key, meta)
        return drop("dump_in_progress") unless INLINE_DUMP.try_lock

        begin
          count(:dumped)
          dump = take(new_pipeline(meta), meta)
        ensure
          INLINE_DUMP.unlock
        end
        deliver(dump_key, meta_key, dump)
      end

      # The request thread pays for fork() only; the child (ForkChild) does GC,
      # dump, gzip and (for URL stores) the upload, then exit!s.
      def fork_dump(dump_key, meta_key, meta)
        child = ForkChild.new(@config.child_timeout)
        # The check and the fork under one lock: concurrent requests never have
        # more than max_children alive. One fork at a time also keeps each
        # child from inheriting another child's report pipe.
        @fork_lock.synchronize do
          full = state { |s| s.children.size >= @config.max_children }
          return drop("max_children", limit: @config.max_children) if full

          count(:dumped)
          child.start { |out| child_dump(dump_key, meta_key, meta, out) }
          state { |s| s.children[child.pid] = Thread.new { reap(child, dump_key, meta_key) } }
        end
      end

      # Runs in the fork child; returns its exit status. Reports on `out`: a JSON
      # line, then (for stores only the parent can write to) the gzipped bytes.
      def child_dump(dump_key, meta_key, meta, out)
        rss_base = reset_peak_rss
        if @config.child_writes?
          dump = take(new_pipeline(meta, dump_key, meta_key), meta, rss_base)
          out.write("#{JSON.generate(ok: true, stored_bytes: dump.stored_bytes)}\n")
        else
          dump = take(new_pipeline(meta), meta, rss_base)
          bytes = dump.take_bytes
          out.write("#{JSON.generate(ok: true, ship: bytes.bytesize, meta: dump.meta)}\n")
          out.write(bytes)
        end
        out.close
        0
      rescue Exception => e # rubocop:disable Lint/RescueException -- the child must always report and exit!
        begin
          out.write("#{JSON.generate(ok: false, error: "#{e.class}: #{e.message}")}\n")
          out.close
        rescue StandardError
          nil
        end
        1
      end

      # Linux: restart the peak RSS (VmHWM) from the current RSS, which in a
      # fork child counts the pages it shares with the parent; returns that RSS
      # in kB, or nil where /proc cannot do it.
      def reset_peak_rss
        ::File.write("/proc/self/clear_refs", "5")
        status_kb("VmRSS")
      rescue SystemCallError, IOError
        nil
      end

      def status_kb(field)
        ::File.read("/proc/self/status")[/^#{field}:\s+(\d+) kB/, 1]&.to_i
      rescue SystemCallError, IOError
        nil
      end

      # A parent thread per child: read its report by the deadline, reap it,
      # count the outcome. A child past its deadline is killed and counted failed.
      def reap(child, dump_key, meta_key)
        report, bytes, status = child.collect
        if report["ok"] && status.success?
          if bytes
            deliver(dump_key, meta_key, Native::Dump.shipped(bytes, report["meta"]))
          else
            count(:stored)
            @log.debug("dump_stored", key: dump_key, bytes: report["stored_bytes"], pid: child.pid)
          end
        else
          count(:failed)
          @log.warn("dump_failed", key: dump_key, error: report["error"] || "child exited with #{status.inspect}")
        end
      rescue ForkChild::Timeout => e
        count(:failed)
        @log.warn("dump_timeout", key: dump_key, pid: child.pid, error: e.message, killed: true)
      rescue StandardError => e
        count(:failed)
        @log.warn("dump_failed", key: dump_key, error: "#{e.class}: #{e.message}")
      ensure
        state { |s| s.children.delete(child.pid) }
      end

      # Hand a finished dump (a Native::Dump) to its store.
      def deliver(dump_key, meta_key, dump)
        if @config.store_url
          writer = state { |s| s.writer ||= Native::Writer.new(@config.store_url, @config.queue_size) }
          # The native writer counts its own drops; log them here.
          return if writer.submit(dump_key, meta_key, dump)

          @log.warn("dump_dropped", reason: "queue_full", limit: @config.queue_size)
        else
          queue = state { |s| s.queue ||= new_store_queue }
          drop("queue_full", limit: @config.queue_size) unless queue.push(dump_key, meta_key, dump.take_bytes, dump.meta)
        end
      end

      def new_store_queue
        StoreQueue.new(store: @config.store, layout: @config.layout, capacity: @config.queue_size,
                       log: @log) { |outcome| count(outcome) }
      end

      def drop(reason, **fields)
        count(:dropped)
        @log.warn("dump_dropped", reason: reason, **fields)
        nil
      end

      public

      # Queue one value for a `[]=` store on the same thread and bound as
      # dumps (census batches). Returns false, queueing nothing, when full;
      # otherwise `done` is later called on that thread with nil or the error.
      def enqueue_value(key, value, &done)
        state { |s| s.queue ||= new_store_queue }.push_value(key, value, &done)
      end

      private

      def report_writer_errors
        writer = @state.pid == Process.pid && @state.writer
        return unless writer

        writer.errors.each { |message| @log.warn("store_failed", error: message) }
      end
    end
  end
end
