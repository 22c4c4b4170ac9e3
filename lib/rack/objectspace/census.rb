# frozen_string_literal: true

require "socket"

module Rack
  class Objectspace
    # The census: for every request the process serves, the live objects and
    # memsize of each allocation site as the last GC left them, with the
    # running count of requests, the GC count, a timestamp and the endpoints
    # served since the previous point (see ext/objectspace_core/src/census.rs).
    #
    # The request thread only calls {#request}: a few microseconds under two
    # locks, no I/O. One background thread per process makes a batch every
    # {INTERVAL} seconds (sooner when {BATCH_POINTS} points wait, and at
    # flush and exit) and hands it to the store: URL stores through a native
    # writer (bounded by queue_size), `[]=` stores through the dumper's
    # queue (Dumper#enqueue_value). A batch the store cannot take is dropped
    # and counted in {#stats}.
    #
    # Memsize: the counts are exact as of the last sweep; a site's memsize is
    # its count times its objects' mean memsize from the last heap walk
    # (40 bytes, one slot, before the first). The thread walks the heap (with
    # the GVL, about 35 ms per million objects) after a GC, at most so often
    # that walks take {WALK_BUDGET} of the time.
    class Census
      # Seconds between batches.
      INTERVAL = 5.0
      # A batch is made as soon as this many points wait.
      BATCH_POINTS = 2000
      # Most of the wall time spent walking the heap for memsize (0.2%).
      WALK_BUDGET = 0.002
      STAT_KEYS = %i[requests points batches stored failed dropped dropped_points pending walks].freeze
      # Requests between two looks at the census's growth (auto_dump:).
      GROWTH_CHECK_EVERY = 16

      class << self
        # The Census that owns this process's native census (one per process:
        # the latest middleware to serve a request). Others' threads stop.
        attr_reader :owner

        # Hand this process's native census to `census` (nil: to none).
        def owner=(census)
          @owner = census
          Native::Census.own(census ? census.object_id : 0)
        end
      end

      # @param config [Config]
      # @param log [Log]
      # @param dumper [Dumper] its []= queue carries batches for []= stores
      def initialize(config, log, dumper)
        @config = config
        @log = log
        @dumper = dumper
        @host = Socket.gethostname
        @lock = Mutex.new
        @wake = ConditionVariable.new
        @pid = nil
        @due_lock = Mutex.new
        @dump_due = false
        @auto_dump = config.auto_dump
        @id = object_id
        Native::Census.enable
        # The exact census records every allocation; the sampled one the
        # requests its random countdown picks, one in sample_rate.
        @sampled = config.census == :sampled
        Native::Tracer.sample(@sampled ? config.sample_rate : 1, config.sample_seed)
      end

      # A request begins (called on the request thread). Returns its number in
      # this process; nil before #start_process in this process (its first
      # request, or another middleware's census took over): every other
      # request is one native call, and the claim below with the exact census.
      def request(env)
        n = Native::Census.request(env, @id)
        return unless n

        # The env, its headers and its input were made before the request began
        # (by the server's thread, or this one under the number of the request it
        # served before): they are this request's. The sampled census never
        # recorded them (it records from the request's beginning).
        unless @sampled
          input = env["rack.input"]
          Native::Census.claim(env, defined?(::StringIO) && input.is_a?(::StringIO) ? input.string : nil)
        end
        @wake.signal if (n % BATCH_POINTS).zero?
        watch_growth if @auto_dump && (n % GROWTH_CHECK_EVERY).zero?
        n
      end

      # Whether a dump the census asked for (auto_dump:) is due: a plain read,
      # for every request; #dump_due? takes it.
      attr_reader :dump_due

      # True once for each dump the census asks for (auto_dump:): the request
      # that asks is dumped. A plain read when nothing is due.
      def dump_due?
        return false unless @dump_due

        @due_lock.synchronize do
          due = @dump_due
          @dump_due = false
          due
        end
      end

      # Run a full GC, store what is waiting and wait up to `timeout` seconds
      # for the store.
      # @return [Hash] #stats
      def flush(timeout)
        return stats unless @pid == Process.pid && Census.owner.equal?(self)

        deadline = now + timeout
        @lock.synchronize do
          # The books close on a full GC: a major GC's counts are exact (a minor
          # GC's still hold old objects that died since the last major one), and
          # a process that saw few GCs gets one more observation.
          GC.start
          Native::Census.finish_sweep
          store_batch(walk: true)
        end
        Native::Census.flush_writer([deadline - now, 0].max) if @config.store_url
        @lock.synchronize do
          @wake.wait(@lock, [deadline - now, 0].max) while @queued.positive? && deadline > now
        end
        stats
      end

      # at_exit: the last points, then one line with what was stored and lost.
      def shutdown(timeout)
        return unless @pid == Process.pid && Census.owner.equal?(self)

        s = flush(timeout)
        @log.info("census_flushed", **s.slice(:requests, :points, :stored, :dropped, :dropped_points, :failed))
      end

      # `{requests:, points:, batches:, stored:, failed:, dropped:, dropped_points:, pending:, walks:}`:
      # batches stored, failed and dropped (store too slow); points dropped
      # (the buffer was full, or their batch was dropped); points waiting.
      def stats
        native = Native::Census.stats
        s = @lock.synchronize { @stats&.dup } || Hash.new(0)
        writer = @config.store_url && Native::Census.writer_stats
        if writer
          s[:stored] += writer[:stored]
          s[:failed] += writer[:failed]
          s[:dropped] += writer[:dropped]
        end
        s[:requests] = native[:requests]
        s[:points] = native[:points]
        s[:batches] = native[:batches]
        s[:dropped_points] += native[:dropped]
        s[:pending] = native[:pending]
        STAT_KEYS.to_h { |k| [k, s[k]] }
      end

      # First request of this process (or of a fork child of it), from the
      # middleware: fresh counts and a thread.
      def start_process
        @lock.synchronize do
          return if @pid == Process.pid && Census.owner.equal?(self)

          Native::Census.reset # a new series: this process, this middleware
          @due_lock.synchronize do
            @growth_seen = Native::Census.growth_gcs
            @asked_at = nil
            @dump_due = false
          end
          @pid = Process.pid
          @stats = Hash.new(0)
          @queued = 0
          @walked_gc = nil
          @walked_at = now
          @walk_ms = 0.0
          @cap_logged = false
          refusal = Native::Tracer.refusal
          @log.warn("census_off", reason: refusal) if refusal
          Census.owner = self # its requests get numbers from now on
          @thread = Thread.new { run }
          @thread.name = "rack-objectspace census" if @thread.respond_to?(:name=)
        end
      end

      private

      def now
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      # auto_dump: since the last dump the census asked for (at least
      # auto_dump seconds ago), a GC saw a site rise that had risen at 8 GCs
      # without falling (Native::Census.growth_gcs went up): this request is
      # dumped (full, for paths).
      def watch_growth
        growth = Native::Census.growth_gcs
        @due_lock.synchronize do
          @growth_seen = growth if growth < @growth_seen # the site table started over
          return if growth == @growth_seen
          return if @asked_at && now - @asked_at < @config.auto_dump

          @growth_seen = growth
          @asked_at = now
          @dump_due = true
        end
        @log.info("census_asks_dump", growth_gcs: growth)
      end

      def run
        pid = Process.pid
        while Process.pid == pid
          @lock.synchronize do
            @wake.wait(@lock, INTERVAL) if Native::Census.pending < BATCH_POINTS
            return unless Census.owner.equal?(self)

            store_batch
          end
        end
      end

      # Under @lock, on the census thread (or flush's caller, which always
      # walks: the last batch has memsize and endpoints as of the end).
      # Never raises: a batch that cannot be handed to the store is counted
      # as failed, and logged.
      def store_batch(walk: false)
        walk(force: walk)
        log_caps
        hand_over
        report_writer_errors
      rescue StandardError => e
        @stats[:failed] += 1
        @log.warn("census_failed", error: "#{e.class}: #{e.message}")
      end

      def hand_over
        if @config.store_url
          key, points, queued = Native::Census.submit_batch(@config.store_url, @config.queue_size, @host, @pid)
          batch_dropped(key, points) if key && !queued
        else
          key, bytes, points = Native::Census.take_batch(@host, @pid)
          return unless key

          queued = @dumper.enqueue_value(key, bytes) { |error| stored(key, error) }
          @queued += 1 if queued
          batch_dropped(key, points) unless queued
        end
      end

      # Walk the heap for memsize after a GC, within WALK_BUDGET of the time.
      def walk(force: false)
        gc = GC.count
        return if gc == @walked_gc
        return if !force && now - @walked_at < @walk_ms / 1000.0 / WALK_BUDGET
        return if Native::Census.pending.zero?

        _, ms = Native::Census.walk
        @walked_gc = gc
        @walked_at = now
        @walk_ms = ms
        @stats[:walks] += 1
      end

      def log_caps
        return if @cap_logged

        t = Native::Tracer.stats
        caps = %i[site_cap file_cap byte_cap].select { |k| t[k] }
        return if caps.empty?

        @cap_logged = true
        @log.warn("site_table_capped", caps: caps.join(","), sites: t[:sites], files: t[:files], bytes: t[:bytes],
                                       max_sites: Native::Tracer::MAX_SITES, max_files: Native::Tracer::MAX_FILES,
                                       max_bytes: Native::Tracer::MAX_TABLE_BYTES)
      end

      def batch_dropped(key, points)
        @stats[:dropped_points] += points
        @stats[:dropped] += 1 unless @config.store_url # the native writer counts its own
        @log.warn("census_dropped", key: key, points: points, reason: "queue_full", limit: @config.queue_size)
      end

      # Called on the []= queue's thread.
      def stored(key, error)
        @lock.synchronize do
          @queued -= 1
          if error
            @stats[:failed] += 1
            @log.warn("census_failed", key: key, error: "#{error.class}: #{error.message}")
          else
            @stats[:stored] += 1
          end
          @wake.broadcast
        end
      end

      def report_writer_errors
        return unless @config.store_url

        Native::Census.writer_errors.each { |message| @log.warn("census_failed", error: message) }
      end
    end
  end
end
