# frozen_string_literal: true

require "zlib"
require "stringio"

module Rack
  class Objectspace
    # Writes dumps to a `[]=` store (a Hash, Moneta over Redis) from one
    # background thread, behind a bounded queue: when it is full the dump is
    # dropped, never waited for. One per process (threads do not survive fork).
    class StoreQueue
      # @param on_done [#call] called with :stored or :failed after each write
      def initialize(store:, layout:, capacity:, log:, &on_done)
        @store = store
        @layout = layout
        @capacity = capacity
        @log = log
        @on_done = on_done
        @lock = Mutex.new
        @idle = ConditionVariable.new
        @queue = Queue.new
        @queued = 0 # pushed and not yet written
        @thread = nil
      end

      # Queue one dump (gzipped bytes and its metadata JSON); false when full.
      def push(dump_key, meta_key, bytes, meta)
        enqueue([:dump, dump_key, meta_key, bytes, meta])
      end

      # Queue one value to write as it is (a census batch); false when full.
      # `done` is called on the queue's thread with nil or the error.
      def push_value(key, value, &done)
        enqueue([:value, key, value, done])
      end

      # Dumps queued and not yet written.
      def pending
        @lock.synchronize { @queued }
      end

      # Wait until nothing is pending or `deadline` (a monotonic time) passes.
      def wait_idle(deadline)
        @lock.synchronize do
          while @queued.positive?
            left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
            break unless left.positive?

            @idle.wait(@lock, left)
          end
        end
      end

      private

      def enqueue(job)
        @lock.synchronize do
          return false if @queued >= @capacity

          @thread = Thread.new { drain } unless @thread&.alive?
          @queued += 1
          @queue << job
        end
        true
      end

      def drain
        loop do
          kind, *job = @queue.pop
          begin
            kind == :value ? write_value(*job) : write(*job)
          ensure
            @lock.synchronize do
              @queued -= 1
              @idle.broadcast
            end
          end
        end
      end

      def write_value(key, value, done)
        @store[key] = value
        done&.call(nil)
      rescue StandardError => e
        done&.call(e)
      end

      def write(dump_key, meta_key, bytes, meta)
        if @layout == :object
          write_objects(dump_key, bytes)
        else
          @store[dump_key] = bytes
        end
        @store[meta_key] = meta
        @on_done.call(:stored)
        @log.debug("dump_stored", key: dump_key, bytes: bytes.bytesize)
      rescue StandardError => e
        @on_done.call(:failed)
        @log.warn("store_failed", key: dump_key, error: "#{e.class}: #{e.message}")
      end

      # The per-object layout: each record under `<dump-key>/<address>`
      # (ROOT records, which have no address, under `<dump-key>/root-<n>`).
      def write_objects(dump_key, bytes)
        roots = 0
        Zlib::GzipReader.wrap(StringIO.new(bytes)) do |gz|
          gz.each_line do |line|
            address = line[/"address":"(0x\h+)"/, 1] || "root-#{roots += 1}"
            @store["#{dump_key}/#{address}"] = line.chomp
          end
        end
      end
    end
  end
end
