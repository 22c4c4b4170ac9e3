# frozen_string_literal: true

require "open3"
require "securerandom"
require "rbconfig"

# Faults: the app's responses never change, failures and drops are counted in
# #stats and logged once per burst; fork children are bounded and reaped; at
# exit pending dumps get flush_timeout, then are abandoned with a log line.
RSpec.describe "Rack::Objectspace under faults", :slow do
  LIB = File.expand_path("../../lib", __dir__) # rubocop:disable Lint/ConstantDefinitionInBlock

  let(:app) { ->(_env) { [200, { "Content-Type" => "text/plain" }, ["served"]] } }

  def serve(app, n, path: "/f", headers: {})
    Array.new(n) { |i| Rack::MockRequest.new(app).get("#{path}/#{i}", headers) }
  end

  # A []= store that takes `delay` seconds per write.
  class SlowStore # rubocop:disable Lint/ConstantDefinitionInBlock
    attr_reader :keys

    def initialize(delay)
      @delay = delay
      @keys = Queue.new
    end

    def []=(key, _value)
      sleep @delay
      @keys << key
    end
  end

  describe "an unwritable folder" do
    around do |example|
      @dir = Dir.mktmpdir("objectspace-faults-")
      example.run
    ensure
      FileUtils.rm_rf(@dir)
    end

    it "fails at boot, naming the store, when the folder cannot be created" do
      File.write(File.join(@dir, "file"), "")
      expect { Rack::Objectspace.new(app, store: "file://#{@dir}/file/dumps") }
        .to raise_error(ArgumentError, /store.*file:\/\/.*cannot create folder/)
    end

    %i[fork inline].each do |mode|
      it "serves every request, counts the failures and logs them once, when the folder goes away (#{mode})" do
        store = File.join(@dir, "dumps")
        linted_app, middleware = linted(app, store: "file://#{store}", mode: mode, dump: :retained,
                                             max_children: 2, queue_size: 2)
        # The folder becomes a plain file after boot: no write under it can succeed.
        FileUtils.rm_rf(store)
        File.write(store, "not a folder")

        responses = serve(linted_app, 8)
        expect(responses.map(&:status)).to all(eq(200))
        expect(responses.map(&:body)).to all(eq("served"))
        stats = middleware.flush(60)
        expect(stats).to include(stored: 0, pending: 0)
        expect(stats[:failed]).to be >= 1
        expect(stats[:failed] + stats[:dropped]).to eq(8)
        failures = logged.each_line.grep(/event=(dump|store)_failed /)
        expect(failures.size).to eq(1), failures.join
        expect(failures.first).to match(/at=warn/)
        expect(dump_children).to be_empty
      end
    end
  end

  describe "a burst that fills the queue" do
    it "drops what does not fit in a slow []= store's queue, counts it and logs it once" do
      store = SlowStore.new(0.3)
      # census: false: this counts the store's keys, dumps' only.
      linted_app, middleware = linted(app, store: store, mode: :inline, dump: :retained, queue_size: 2, census: false)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect(serve(linted_app, 10).map(&:status)).to all(eq(200))
      served_in = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      expect(served_in).to be < 2.5 # never waited for the store (10 dumps x 2 writes x 0.3 s = 6 s)
      stats = middleware.flush(30)
      expect(stats[:dropped]).to be >= 5
      expect(stats).to include(dumped: 10, failed: 0, pending: 0)
      expect(stats[:stored] + stats[:dropped]).to eq(10)
      expect(store.keys.size).to eq(stats[:stored] * 2) # dump + meta
      drops = events(logged, "dump_dropped")
      expect(drops.size).to eq(1)
      expect(drops.first).to include("reason=queue_full", "limit=2", "at=warn")
    end

    it "drops what does not fit in the native writer's queue while an S3 endpoint hangs" do
      # A TCP server that accepts connections and never answers.
      hole = TCPServer.new("127.0.0.1", 0)
      held = []
      acceptor = Thread.new { loop { held << hole.accept } }
      aws = { "AWS_ENDPOINT" => "http://127.0.0.1:#{hole.addr[1]}", "AWS_ACCESS_KEY_ID" => "test",
              "AWS_SECRET_ACCESS_KEY" => "test", "AWS_REGION" => "us-east-1" }
      with_env(aws) do
        linted_app, middleware = linted(app, store: "s3://hanging/p", mode: :inline, dump: :retained,
                                             queue_size: 2, flush_timeout: 1)
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        expect(serve(linted_app, 6).map(&:status)).to all(eq(200))
        expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 5
        stats = middleware.flush(1)
        expect(stats).to include(dumped: 6, dropped: 4, pending: 2, stored: 0)
        expect(events(logged, "dump_dropped").size).to eq(1)

        # The endpoint goes away: the two hanging uploads fail and are counted.
        acceptor.kill
        held.each(&:close)
        hole.close
        stats = eventually(timeout: 60) { (s = middleware.flush(1))[:pending].zero? && s }
        expect(stats).to include(dumped: 6, dropped: 4, pending: 0, stored: 0, failed: 2)
      end
    ensure
      acceptor&.kill
      hole&.close unless hole&.closed?
    end
  end

  describe "fork children" do
    it "never runs more than max_children at once, drops and counts the excess, and leaves no zombie" do
      linted_app, middleware = linted(app, store: "memory://faults-#{SecureRandom.hex(4)}", mode: :fork,
                                           max_children: 2, queue_size: 16)
      most = 0
      sampling = true
      sampler = Thread.new do
        while sampling
          most = [most, dump_children.count { |c| c[:state] != "Z" }].max
          sleep 0.003
        end
      end
      responses = serve(linted_app, 12)
      stats = middleware.flush(120)
      sampling = false
      sampler.join

      expect(responses.map(&:status)).to all(eq(200))
      expect(most).to be_between(1, 2) # the sampler did see the children, and never more than 2
      expect(stats[:dropped]).to be >= 1
      expect(stats).to include(failed: 0, pending: 0)
      expect(stats[:stored] + stats[:dropped]).to eq(12)
      expect(stats[:dumped]).to eq(stats[:stored])
      drops = events(logged, "dump_dropped")
      expect(drops.size).to eq(1)
      expect(drops.first).to include("reason=max_children", "limit=2")
      expect(dump_children).to be_empty # every child reaped: no zombie
    end
  end

  describe "at process exit" do
    # Runs a Ruby process that serves `requests` inline-dumped requests into a
    # []= store taking `delay` s per write, then exits; returns its log and
    # how long it took to exit after the last response.
    def run_exiting_process(delay:, flush_timeout:, requests: 3)
      dir = Dir.mktmpdir("objectspace-exit-")
      script = <<~RUBY
        require "rack/objectspace"
        require "rack/mock"
        require "logger"
        class SlowStore
          def []=(key, _value)
            sleep #{delay}
            File.write(File.join(#{dir.inspect}, key.tr("/", "_")), "")
          end
        end
        app = ->(_env) { [200, {}, ["ok"]] }
        mw = Rack::Objectspace.new(app, store: SlowStore.new, mode: :inline, dump: :retained,
                                        queue_size: 8, flush_timeout: #{flush_timeout},
                                        logger: Logger.new($stdout))
        #{requests}.times { |i| Rack::MockRequest.new(mw).get("/exit/\#{i}") }
        $stdout.puts "served"
        $stdout.flush
      RUBY
      output = +""
      served_at = nil
      status = nil
      Open3.popen2e(RbConfig.ruby, "-I", LIB, "-e", script) do |stdin, out, wait|
        stdin.close
        out.each_line do |line|
          served_at ||= Process.clock_gettime(Process::CLOCK_MONOTONIC) if line.chomp == "served"
          output << line
        end
        status = wait.value
      end
      exited_in = Process.clock_gettime(Process::CLOCK_MONOTONIC) - served_at if served_at
      [output, exited_in, status, files_under(dir)]
    ensure
      FileUtils.rm_rf(dir)
    end

    it "flushes pending dumps within flush_timeout" do
      output, exited_in, status, files = run_exiting_process(delay: 0.1, flush_timeout: 10)
      expect(status).to be_success
      expect(output).to include("served")
      expect(files.size).to eq(6) # 3 dumps + 3 metadata records
      expect(exited_in).to be < 5
      expect(output).not_to include("event=flush_abandoned")
    end

    it "abandons what is still pending at the deadline, with a log line" do
      output, exited_in, status, files = run_exiting_process(delay: 3, flush_timeout: 1)
      expect(status).to be_success
      expect(exited_in).to be_between(0.8, 3.0)
      expect(files.size).to be < 6
      abandoned = events(output, "flush_abandoned")
      expect(abandoned.size).to eq(1)
      expect(abandoned.first).to match(/pending=[1-3] /).and include("timeout=1.0", "at=warn")
    end
  end

  describe "at process exit in fork mode" do
    it "leaves no dump child behind once flush_timeout has passed" do
      script = <<~RUBY
        require "rack/objectspace"
        require "rack/mock"
        require "logger"
        require "socket"
        # An S3 endpoint that accepts connections and never answers.
        hole = TCPServer.new("127.0.0.1", 0)
        Thread.new { held = []; loop { held << hole.accept } }
        ENV.update("AWS_ENDPOINT" => "http://127.0.0.1:\#{hole.addr[1]}", "AWS_ACCESS_KEY_ID" => "t",
                   "AWS_SECRET_ACCESS_KEY" => "t", "AWS_REGION" => "us-east-1")
        mw = Rack::Objectspace.new(->(_env) { [200, {}, ["ok"]] }, store: "s3://hanging/p", mode: :fork,
                                   dump: :retained, every: 1, flush_timeout: 1, logger: Logger.new($stdout))
        2.times { |i| Rack::MockRequest.new(mw).get("/x/\#{i}") }
        sleep 0.5
        puts "children=\#{mw.stats[:pending]}"
        $stdout.flush
      RUBY
      output = +""
      before = Dir.glob("/proc/[0-9]*").map { |d| File.basename(d).to_i }
      orphans = []
      Open3.popen2e(RbConfig.ruby, "-I", LIB, "-e", script) do |stdin, out, wait|
        stdin.close
        # Read lines, not to EOF: orphans would hold the pipe open.
        reader = Thread.new { out.each_line { |line| output << line } }
        expect(wait.join(30)).not_to be_nil, "the process did not exit within 30 s"
        sleep 1
        orphans = (Dir.glob("/proc/[0-9]*").map { |d| File.basename(d).to_i } - before).select do |pid|
          File.binread("/proc/#{pid}/cmdline").include?("s3://hanging/p")
        rescue Errno::ENOENT, Errno::ESRCH
          false
        end
        orphans.each { |pid| Process.kill("KILL", pid) rescue nil } # rubocop:disable Style/RescueModifier
        reader.join(5)
        reader.kill
      end
      expect(output).to include("children=2", "event=flush_abandoned")
      expect(orphans).to be_empty
    end
  end

  describe "the on-demand trigger" do
    let(:token) { SecureRandom.hex(16) }

    def expect_only_the_token_request_dumped(every)
      dir = Dir.mktmpdir("objectspace-trigger-")
      linted_app, middleware = linted(app, store: "file://#{dir}", mode: :inline, every: every, token: token)
      plain = serve(linted_app, 2, path: "/plain")
      wrong = serve(linted_app, 2, path: "/wrong", headers: { "HTTP_X_OBJECTSPACE_TOKEN" => "#{token[0..-2]}x" })
      short = serve(linted_app, 1, path: "/short", headers: { "HTTP_X_OBJECTSPACE_TOKEN" => token[0, 8] })
      right = serve(linted_app, 1, path: "/right", headers: { "HTTP_X_OBJECTSPACE_TOKEN" => token })

      (plain + wrong + short + right).each do |response|
        expect(response.status).to eq(200)
        expect(response.body).to eq("served")
      end
      expect(middleware.flush(30)).to include(dumped: 1, stored: 1, failed: 0, dropped: 0)
      files = files_under(dir)
      expect(files.size).to eq(2)
      expect(files).to all(include("GET-right_0"))
      meta = JSON.parse(File.read(File.join(dir, files.grep(/meta\.json\z/).first)))
      expect(meta["request"]["path"]).to eq("/right/0")
      expect(logged).not_to include(token)
      expect(events(logged, "trigger_refused").size).to eq(1)
    ensure
      FileUtils.rm_rf(dir) if dir
    end

    it "with every: nil (only on demand), dumps only a request carrying the right token" do
      expect_only_the_token_request_dumped(nil)
    end

    it "with every: \"never\", dumps only a request carrying the right token; a wrong or missing token is served normally" do
      expect_only_the_token_request_dumped("never")
    end

    it "also dumps a triggered request between every: N samples, and no sampled request with a wrong token" do
      dir = Dir.mktmpdir("objectspace-trigger-")
      linted_app, middleware = linted(app, store: "file://#{dir}", mode: :inline, every: 100, token: token)
      serve(linted_app, 1, path: "/sampled", headers: { "HTTP_X_OBJECTSPACE_TOKEN" => "wrong-token-wrong-token" })
      serve(linted_app, 1, path: "/first")
      serve(linted_app, 1, path: "/asked", headers: { "HTTP_X_OBJECTSPACE_TOKEN" => token })
      expect(middleware.flush(30)).to include(dumped: 2, stored: 2)
      expect(files_under(dir).grep(/jsonl\.gz\z/).map { |f| f[/GET-(\w+?)_0/, 1] }).to match_array(%w[first asked])
    ensure
      FileUtils.rm_rf(dir) if dir
    end
  end

  describe "concurrent inline dumps in one process (puma with threads)" do
    it "serve every request, never crash or hang the process, and drop (counted) what cannot run at once" do
      script = <<~RUBY
        require "rack/objectspace"
        require "rack/mock"
        require "logger"
        require "tmpdir"
        mw = Rack::Objectspace.new(->(_env) { [200, {}, ["ok"]] }, store: "file://\#{Dir.mktmpdir}",
                                   mode: :inline, dump: :full, every: 1, queue_size: 64, logger: Logger.new($stdout))
        threads = Array.new(3) { |t| Thread.new { 8.times { |i| Rack::MockRequest.new(mw).get("/c/\#{t}-\#{i}") } } }
        threads.each(&:join)
        stats = mw.flush(60)
        puts "stats=\#{stats[:stored] + stats[:dropped]} failed=\#{stats[:failed]}"
      RUBY
      output = +""
      status = nil
      Open3.popen2e(RbConfig.ruby, "-I", LIB, "-e", script) do |stdin, out, wait|
        stdin.close
        # It has also deadlocked here (both Rust readers waiting on their pipes): 20 s at most.
        reader = Thread.new { output << out.read }
        unless wait.join(20)
          Process.kill("KILL", wait.pid)
          output << "\n(killed after 20 s: deadlocked)"
        end
        status = wait.value
        reader.join
      end
      expect(status).to be_success, output[0, 2000]
      expect(output).to include("stats=24 failed=0")
    end
  end
end
