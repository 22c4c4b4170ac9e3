# frozen_string_literal: true

require "rack/objectspace/analysis"

# A real puma over HTTP serving spec/fixtures/puma/config.ru, single mode and
# cluster mode (2 workers, app preloaded in the master, so the middleware is
# built before the fork): each process's dumps go under its own pid, and every
# request served is dumped exactly once, to the right folder.
RSpec.describe "Rack::Objectspace under a real puma", :slow do
  around do |example|
    @dir = Dir.mktmpdir("objectspace-puma-")
    example.run
  ensure
    @puma&.stop
    FileUtils.rm_rf(@dir)
  end

  def boot(mode:, workers:, threads: 2)
    env = {
      "RACK_OBJECTSPACE_STORE" => "file://#{@dir}", "RACK_OBJECTSPACE_MODE" => mode.to_s,
      "RACK_OBJECTSPACE_DUMP" => "retained", "RACK_OBJECTSPACE_EVERY" => "1",
      # More children allowed than requests sent: this spec is about keys, not
      # capacity (children run at nice 19 and may all still be alive at once).
      "RACK_OBJECTSPACE_MAX_CHILDREN" => "64", "RACK_OBJECTSPACE_QUEUE_SIZE" => "64",
      "APP_SLEEP" => "0.02"
    }
    @puma = start_server!(:puma, workers: workers, threads: threads, env: env)
  end

  # `clients` threads send `per_client` requests each, to distinct paths.
  # @return [Hash{Integer=>Array<String>}] paths served, by the pid in x-pid
  def load(clients:, per_client:)
    threads = Array.new(clients) do |c|
      Thread.new do
        Array.new(per_client) do |i|
          path = "/r/#{c}-#{i}"
          response = http_get(@puma.port, path)
          raise "#{path}: HTTP #{response.code}" unless response.code == "200"

          [Integer(response["x-pid"]), path]
        end
      end
    end
    threads.flat_map(&:value).group_by(&:first).transform_values { |pairs| pairs.map(&:last).sort }
  end

  # The dumps in the store: { pid folder => [meta Hash, ...] }, once each dump has its meta.
  def stored_by_pid
    host = Socket.gethostname
    metas = files_under(@dir).grep(/\.meta\.json\z/)
    metas.group_by { |f| Integer(f.split("/")[1]) }.transform_values do |files|
      files.map do |f|
        meta = JSON.parse(File.read(File.join(@dir, f)))
        expect(f).to start_with("#{host}/#{meta['pid']}/")
        expect(File).to exist(File.join(@dir, f.sub(/\.meta\.json\z/, ".jsonl.gz")))
        meta
      end
    end
  end

  def expect_every_request_dumped_under_its_pid(served)
    total = served.values.sum(&:size)
    stored = eventually(timeout: 60) do
      s = stored_by_pid
      s if s.values.sum(&:size) >= total
    end
    stored ||= stored_by_pid
    expect(stored.keys).to match_array(served.keys)
    served.each do |pid, paths|
      metas = stored.fetch(pid)
      expect(metas.map { |m| m["pid"] }.uniq).to eq([pid])
      expect(metas.map { |m| m["request"]["path"] }.sort).to eq(paths), "dumps of pid #{pid} are not its requests; log:\n#{@puma.log[-3000..] || @puma.log}"
      # A per-process sequence with no gap: none lost, none from another process.
      expect(metas.map { |m| m["seq"] }.sort).to eq((1..paths.size).to_a)
    end
    log = @puma.log
    expect(log).not_to match(/event=(dump_dropped|dump_failed|store_failed)/)
  end

  it "names the endpoint that allocated each leaked object, though other threads' requests began meanwhile" do
    @puma = start_server!(:puma, threads: 4, env: { "RACK_OBJECTSPACE_STORE" => "file://#{@dir}",
                                                    "RACK_OBJECTSPACE_EVERY" => "never" })
    # Two clients send 50 requests each to /leak, two others to /home until
    # they are done: while a /leak request sleeps before allocating what it
    # keeps, /home requests begin on other threads.
    leaking = Array.new(2) { Thread.new { 50.times { expect(http_get(@puma.port, "/leak").code).to eq("200") } } }
    Array.new(2) do
      Thread.new { expect(http_get(@puma.port, "/home").code).to eq("200") while leaking.any?(&:alive?) }
    end.each(&:join)
    leaking.each(&:join)
    requests = JSON.parse(http_get(@puma.port, "/__flush").body).dig("census", "requests")
    config = File.join(TestServers::FIXTURES, "puma", "config.ru")
    line = File.readlines(config).index { |l| l.include?("# the leak") } + 1
    report = Rack::Objectspace::Analysis.leaks("file://#{@dir}", top: 0)
    site = report["sites"].find { |s| s["location"] == "#{config}:#{line}" }
    expect(site).not_to be_nil, "#{report['warnings']} #{report['sites'].first(3)}"
    expect(site["per_request"]).to be_within(0.2 * 100 / requests).of(100.0 / requests)
    expect(site["allocated_by"].map { |e| [e["method"], e["path"]] }).to eq([%w[GET /leak]])
    # As of the census's latest heap walk (after a GC, within its time budget).
    expect(site["allocated_by"].first["count"]).to be_between(80, 100)
  end

  it "puts what puma made for a request before the app saw it (its env) down to that request's endpoint" do
    @puma = start_server!(:puma, threads: 4, env: { "RACK_OBJECTSPACE_STORE" => "file://#{@dir}",
                                                    "RACK_OBJECTSPACE_EVERY" => "never", "APP_GARBAGE" => "4000" })
    # Each thread serves /keep-env and /home in turn: puma makes a request's
    # env before the middleware sees it, on its own thread or on the worker
    # thread still carrying the number of the request it served before.
    clients = Array.new(4) do |c|
      Thread.new do
        60.times { |i| expect(http_get(@puma.port, (i + c).even? ? "/keep-env" : "/home").code).to eq("200") }
      end
    end
    clients.each(&:join)
    http_get(@puma.port, "/__flush")
    report = Rack::Objectspace::Analysis.leaks("file://#{@dir}", top: 0, all: true)
    expect(report["sites"]).not_to be_empty, report["warnings"].inspect
    # The env Hash and its Strings (headers, request line); the connection's own
    # objects (puma's Client, its parser) are not the request's.
    pumas = report["sites"].select { |s| s["location"].include?("/puma") && %w[HASH STRING].include?(s["type"]) }
    expect(pumas.map { |s| s["type"] }).to include("HASH"), report["sites"].map { |s| s["location"] }.inspect
    # All but the env of the /__flush request itself, alive during the flush's
    # heap walk (it never reaches the middleware, so nothing claims it).
    pumas.each do |site|
      by = site["allocated_by"].to_h { |e| [e["path"], e["count"]] }
      expect(by.keys.first).to eq("/keep-env"), "#{site['location']} #{site['type']}: #{by}"
      expect(by["/keep-env"]).to be >= 0.97 * by.values.sum, "#{site['location']} #{site['type']}: #{by}"
    end
  end

  it "in single mode with fork dumps, stores every request's dump under the server's pid" do
    boot(mode: :fork, workers: 0)
    served = load(clients: 3, per_client: 8)
    expect(served.keys.size).to eq(1)
    expect_every_request_dumped_under_its_pid(served)
  end

  %i[fork inline].each do |mode|
    it "in cluster mode with 2 workers (#{mode} dumps), keys each worker's dumps by its own pid, none mixed up or lost" do
      # Inline: one puma thread per worker, since a second concurrent inline dump in
      # a process is dropped by design (faults_spec, "concurrent inline dumps"), and
      # this spec wants every request dumped.
      boot(mode: mode, workers: 2, threads: mode == :inline ? 1 : 2)
      served = load(clients: 6, per_client: 6)
      expect(served.keys.size).to eq(2), "both workers should have served requests: #{served.transform_values(&:size)}"
      expect(served.keys).not_to include(@puma.pid)
      expect_every_request_dumped_under_its_pid(served)

      # Each worker counts its own: ask until both have answered.
      stats = {}
      eventually(timeout: 20) do
        s = JSON.parse(http_get(@puma.port, "/__flush").body)
        stats[s["pid"]] = s
        stats.size == 2
      end
      served.each do |pid, paths|
        expect(stats.fetch(pid)).to include("dumped" => paths.size, "stored" => paths.size, "failed" => 0,
                                            "dropped" => 0)
      end
    end
  end
end
