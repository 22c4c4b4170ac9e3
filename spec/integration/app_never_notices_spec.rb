# frozen_string_literal: true

require "socket"
require "rack/objectspace/analysis"

# What a dump child may touch, and what a dump may wait on. A dump child is a
# copy of the app's process: it must let go of the client's socket and every
# other socket at once, never run the app's signal handlers or fork hooks, and
# die at its deadline. Waits in the native glue stop on Thread#raise.
RSpec.describe "Rack::Objectspace leaves the app alone", :slow do
  let(:app) { ->(_env) { [200, { "content-type" => "text/plain" }, ["ok"]] } }

  def serve(app, n, path: "/r")
    Array.new(n) { |i| Rack::MockRequest.new(app).get("#{path}/#{i}") }
  end

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  describe "under puma, with a 600k-object heap and a full dump of every request" do
    around do |example|
      @dir = Dir.mktmpdir("objectspace-never-notices-")
      example.run
    ensure
      [@on, @off].each { |s| s&.stop }
      FileUtils.rm_rf(@dir)
    end

    def boot(name, env)
      start_server!(:puma, name: name, workers: 0, threads: 2,
                           env: { "APP_HEAP_OBJECTS" => "600000" }.merge(env))
    end

    def dumping_puma
      boot("puma-dumping", "RACK_OBJECTSPACE_STORE" => "file://#{@dir}", "RACK_OBJECTSPACE_MODE" => "fork",
                           "RACK_OBJECTSPACE_DUMP" => "full", "RACK_OBJECTSPACE_EVERY" => "1")
    end

    # Seconds from sending an HTTP/1.0 request to reading EOF (the server and
    # every copy of the connection closed), as a proxy waiting for the close sees it.
    def time_to_eof(port, path)
      started = now
      socket = TCPSocket.new("127.0.0.1", port)
      socket.write("GET #{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
      response = socket.read
      raise "no response" unless response.start_with?("HTTP/1.")

      now - started
    ensure
      socket&.close
    end

    def median(values)
      values.sort[values.size / 2]
    end

    it "keeps no copy of the client's connection: EOF comes as fast as without the middleware" do
      @off = boot("puma-off", "OBJECTSPACE_OFF" => "1")
      @on = dumping_puma
      off = Array.new(5) { |i| time_to_eof(@off.port, "/off/#{i}") }
      on = Array.new(5) do |i|
        took = time_to_eof(@on.port, "/on/#{i}")
        http_get(@on.port, "/__flush") # every measured request is dumped: no child is left over
        took
      end
      stats = JSON.parse(http_get(@on.port, "/__stats").body)
      expect(stats).to include("dumped" => 5, "stored" => 5, "failed" => 0)
      expect(median(on)).to be <= 3 * median(off) + 0.05,
                            "time to EOF: #{on.map { |t| (t * 1000).round(1) }} ms with dumps, " \
                            "#{off.map { |t| (t * 1000).round(1) }} ms without"
    end

    it "names the child, gives it no handler of the worker's, and survives a kill of it" do
      @on = dumping_puma
      worker = Integer(http_get(@on.port, "/ready-pid").header["x-pid"])
      http_get(@on.port, "/__flush")
      child = nil
      3.times do |i|
        http_get(@on.port, "/slow/#{i}")
        child = eventually(timeout: 3, interval: 0.005) do
          Dir["/proc/[0-9]*/stat"].find do |f|
            File.read(f).split(") ", 2).last.split[1] == worker.to_s
          rescue SystemCallError
            false
          end
        end
        break if child
      end
      expect(child).not_to be_nil, "no dump child of puma #{worker} was seen"
      pid = Integer(child[%r{/proc/(\d+)/}, 1])
      cmdline = File.read("/proc/#{pid}/cmdline").tr("\0", " ").strip
      caught = File.read("/proc/#{pid}/status")[/^SigCgt:\s+(\h+)/, 1].to_i(16)
      expect(cmdline).to eq("rack-objectspace dump (worker #{worker})")
      %w[TERM INT QUIT HUP USR1 USR2].each do |name|
        expect(caught[Signal.list.fetch(name) - 1]).to eq(0), "the dump child still catches SIG#{name}"
      end

      # A TERM meant for the worker, sent to the child: the child dies of it,
      # the worker goes on serving and counts the dump failed.
      Process.kill(:TERM, pid)
      stats = eventually { (s = JSON.parse(http_get(@on.port, "/__flush").body))["pending"].zero? && s }
      expect(stats["failed"]).to be >= 1
      expect(http_get(@on.port, "/ready").code).to eq("200")
      expect(Process.kill(0, worker)).to eq(1)
    end
  end

  describe "fork children" do
    it "kills a child past child_timeout, counts it failed, and gives its slot back" do
      with_hanging_s3 do
        linted_app, middleware = linted(app, store: "s3://hanging/p", mode: :fork, dump: :retained,
                                             max_children: 1, child_timeout: 1)
        expect(serve(linted_app, 2).map(&:status)).to all(eq(200))
        expect(middleware.stats).to include(dumped: 1, dropped: 1)
        stats = eventually(timeout: 10) { (s = middleware.stats)[:pending].zero? && s }
        expect(stats).to include(dumped: 1, failed: 1, pending: 0)
        expect(events(logged, "dump_timeout").first).to include("killed=true", "at=warn")

        # The slot came back: the next request is dumped, not dropped.
        expect(serve(linted_app, 1, path: "/again").map(&:status)).to eq([200])
        expect(middleware.stats).to include(dumped: 2, dropped: 1)
        eventually(timeout: 10) { middleware.stats[:pending].zero? }
        expect(dump_children).to be_empty
      end
    end

    it "never has more than max_children alive when 8 threads dump at once" do
      with_hanging_s3 do
        _, middleware = linted(app, store: "s3://hanging/p", mode: :fork, dump: :full, max_children: 2,
                                    child_timeout: 3)
        gate = Queue.new
        most = 0
        watcher = Thread.new { loop { most = [most, dump_children.count { |c| c[:state] != "Z" }].max; sleep 0.002 } }
        threads = Array.new(8) do |i|
          Thread.new do
            gate.pop
            status, _headers, body = middleware.call(Rack::MockRequest.env_for("/c/#{i}"))
            body.close
            status
          end
        end
        8.times { gate << true }
        expect(threads.map(&:value)).to all(eq(200))
        sleep 0.2
        watcher.kill
        stats = middleware.stats
        expect(stats[:dumped]).to eq(2)
        expect(stats[:dropped]).to eq(6)
        expect(most).to be <= 2
        eventually(timeout: 15) { middleware.stats[:pending].zero? }
      end
    end

    it "keeps no copy of the app's pipes: a subprocess another request feeds sees EOF when it is closed" do
      with_hanging_s3 do
        linted_app, middleware = linted(app, store: "s3://hanging/p", mode: :fork, dump: :retained,
                                             max_children: 1, child_timeout: 4)
        # Another request's subprocess, its stdin open while the dump child is forked.
        cat = IO.popen(["cat"], "r+")
        expect(serve(linted_app, 1).map(&:status)).to eq([200])
        expect(dump_children.map { |c| c[:pid] } - [cat.pid]).not_to be_empty # uploading to an S3 that never answers
        cat.write("all of it")
        started = now
        cat.close_write
        expect(cat.read).to eq("all of it")
        expect(now - started).to be < 1, "cat saw EOF on its stdin only when the dump child exited"
        cat.close
        eventually(timeout: 10) { middleware.stats[:pending].zero? }
      end
    end

    it "does not run the app's fork hooks (Process._fork and fork overrides) in the child" do
      marker = File.join(Dir.mktmpdir("fork-hooks-"), "hook-ran")
      hooks = Module.new do
        define_method(:_fork) do
          pid = super()
          File.write(ENV["FORK_HOOK_MARKER"], "_fork") if pid.zero? && ENV["FORK_HOOK_MARKER"]
          pid
        end
        define_method(:fork) do |&block|
          File.write(ENV["FORK_HOOK_MARKER"], "fork") if ENV["FORK_HOOK_MARKER"] && block.nil?
          super(&block)
        end
      end
      Process.singleton_class.prepend(hooks)
      Dir.mktmpdir("fork-hooks-store-") do |dir|
        with_env("FORK_HOOK_MARKER" => marker) do
          linted_app, middleware = linted(app, store: "file://#{dir}", mode: :fork, dump: :retained)
          expect(serve(linted_app, 2).map(&:status)).to all(eq(200))
          expect(middleware.flush(20)).to include(dumped: 2, stored: 2, failed: 0)
        end
        expect(files_under(dir).grep(/\.jsonl\.gz\z/).size).to eq(2)
      end
      expect(File).not_to exist(marker)
    end
  end

  describe "inline dumps" do
    it "are not held open by a fork another thread makes during the dump" do
      heap = Array.new(300_000) { |i| "held-#{i}" }
      forked = []
      Dir.mktmpdir("inline-fork-") do |dir|
        linted_app, middleware = linted(holder_app(heap), store: "file://#{dir}", mode: :inline, dump: :full)
        stop = false
        forker = Thread.new do
          until stop
            forked << Process.fork { sleep 30; exit!(0) } # rubocop:disable Style/Semicolon
            sleep 0.05
          end
        end
        started = now
        expect(serve(linted_app, 2).map(&:status)).to all(eq(200))
        took = now - started
        stop = true
        forker.join
        expect(middleware.flush(10)).to include(dumped: 2, stored: 2, dropped: 0)
        # A child holding the pipe would hold each dump for its 30 s.
        expect(took).to be < 15, "two inline dumps took #{took.round(2)} s: a forked child held the pipe"
      end
    ensure
      forked.each do |pid|
        Process.kill(:KILL, pid)
        Process.wait(pid)
      rescue Errno::ESRCH, Errno::ECHILD
        nil
      end
    end
  end

  describe "Thread#raise into a thread blocked in the native glue" do
    # Seconds from Thread#raise to the thread's end. The waits raised into
    # would last 30 s (flush), or for ever (a hanging upload, an endless
    # input); a few seconds allow for GC.stress and a loaded machine.
    def raise_into(thread, after: 0.3)
      thread.report_on_exception = false
      sleep after
      raised_at = now
      thread.raise(RuntimeError, "stop waiting")
      expect { thread.join(5) }.to raise_error(RuntimeError, "stop waiting")
      now - raised_at
    end

    it "stops Writer#flush at once, and the process goes on dumping", :gc_stress do
      with_hanging_s3 do
        # census: false: this is about the dump writer's wait (the census's heap
        # walk, under GC.stress, would hold the GVL past the raise).
        _, middleware = linted(app, store: "s3://hanging/p", mode: :inline, dump: :full, flush_timeout: 1,
                                    census: false)
        status, _h, body = middleware.call(Rack::MockRequest.env_for("/hang"))
        body.close
        expect(status).to eq(200)
        waiter = Thread.new { stressed { middleware.flush(30) } }
        expect(raise_into(waiter)).to be < 3
      end
      Dir.mktmpdir("after-raise-") do |dir|
        linted_app, middleware = linted(app, store: "file://#{dir}", mode: :inline, dump: :retained)
        expect(serve(linted_app, 2).map(&:status)).to all(eq(200))
        expect(middleware.flush(10)).to include(stored: 2)
      end
    end

    it "stops Pipeline#finish at once (the upload is abandoned)", :gc_stress do
      with_hanging_s3 do
        pipeline = Rack::Objectspace::Native::Pipeline.streaming(
          redact: true, gzip_level: 1, sites: false, since: nil,
          url: "s3://hanging/p", key: "k.jsonl.gz", meta_key: "k.meta.json"
        )
        io = IO.for_fd(pipeline.write_fd, autoclose: false)
        io.write(%({"address":"0x1", "type":"STRING", "memsize":40}\n))
        io.flush
        pipeline.close_write
        waiter = Thread.new { stressed { pipeline.finish("{}") } }
        expect(raise_into(waiter)).to be < 3
      end
    end

    it "stops an analysis at once" do
      with_fifo do |fifo|
        feeding = true
        # An endless dump: the analysis reads as long as the feeder writes.
        block = %({"address":"0x1", "type":"STRING", "file":"a.rb", "line":1, "memsize":40}\n) * 10_000
        feeder = Thread.new do
          while feeding
            begin
              File.open(fifo, "w") { |f| f.write(block) while feeding }
            rescue Errno::EPIPE, IOError
              nil # the reader stopped
            end
          end
        end
        waiter = Thread.new { Rack::Objectspace::Analysis.summary(fifo, top: 5) }
        expect(raise_into(waiter, after: 0.5)).to be < 3
        feeding = false
        # A feeder waiting in open(2) for a reader: give it one.
        File.open(fifo, File::RDONLY | File::NONBLOCK, &:close)
        feeder.join(5) || feeder.kill
      end
      # And the next analysis runs as usual.
      expect_an_analysis_to_run
    end

    it "stops an analysis waiting for input that never comes (a FIFO nobody writes to)" do
      with_fifo do |fifo|
        waiter = Thread.new { Rack::Objectspace::Analysis.summary(fifo, top: 5) }
        expect(raise_into(waiter, after: 0.5)).to be < 3
        # Its reader, left waiting in open(2), gets a writer and ends.
        release_reader(fifo)
      end
      expect_an_analysis_to_run
    end

    it "lets Ctrl-C end the command while it waits for such input" do
      with_fifo do |fifo, dir|
        err = File.join(dir, "err")
        pid = Process.spawn(RbConfig.ruby, File.expand_path("../../exe/rack-objectspace", __dir__), "summary", fifo,
                            err: err, out: File::NULL)
        begin
          # Booted, its signal handlers set, and its analysis thread waiting in open(2).
          threads = -> { Dir.glob("/proc/#{pid}/task/*/comm").map { |f| File.read(f).strip rescue "" } } # rubocop:disable Style/RescueModifier
          deadline = now + 30
          sleep 0.05 until threads.call.any? { |name| name.start_with?("rack-objectspa") } || now > deadline
          sleep 0.2
          Process.kill(:INT, pid)
          deadline = now + 10
          sleep 0.05 until (exited = Process.wait2(pid, Process::WNOHANG)&.last) || now > deadline
          expect(exited&.exitstatus).to eq(130), "after Ctrl-C: #{exited.inspect}, #{File.read(err)}"
        ensure
          unless exited
            Process.kill(:KILL, pid)
            Process.wait(pid)
          end
        end
      end
    end

    # A FIFO (dump.json) in a folder of its own: yields its path and the folder.
    def with_fifo
      Dir.mktmpdir("fifo-") do |dir|
        fifo = File.join(dir, "dump.json")
        File.mkfifo(fifo)
        yield fifo, dir
      end
    end

    def release_reader(fifo)
      File.open(fifo, File::WRONLY | File::NONBLOCK, &:close)
    rescue Errno::ENXIO
      nil # no reader left
    end

    def expect_an_analysis_to_run
      Dir.mktmpdir("plain-") do |dir|
        path = File.join(dir, "dump.json")
        File.write(path, %({"address":"0x1", "type":"STRING", "file":"a.rb", "line":1, "memsize":40}\n))
        expect(Rack::Objectspace::Analysis.summary(path, top: 5)["objects"]).to eq(1)
      end
    end
  end
end
