# frozen_string_literal: true

require "moneta"
require "securerandom"
require "open3"

# A real Rails 6.1 app (spec/fixtures/rails_app) served by puma, with
# `config.middleware.insert_after ActionDispatch::Static, Rack::Objectspace, store: ...`:
# requests go through the whole stack and their dumps are stored.
RSpec.describe "Rack::Objectspace in a Rails app", :slow,
               debian_ruby_only: "Rails 6.1 needs nokogiri, whose C extension Debian builds for Ruby 3.1 only" do
  RAILS_APP = File.join(TestServers::FIXTURES, "rails_app") # rubocop:disable Lint/ConstantDefinitionInBlock

  before(:all) do
    require "rails"
  rescue LoadError
    skip_outside_ci "Rails is not installed (apt-get install ruby-rails, or bin/setup)"
  end

  let(:secret) { "s3cr3t-#{SecureRandom.hex(16)}" }

  def boot_rails(env)
    start_server!(:puma, rackup: File.join(RAILS_APP, "config.ru"), threads: 1, name: "rails",
                         # /robots.txt is served by ActionDispatch::Static (never dumped) when it is there.
                         ready_path: env["OBJECTSPACE_STATIC"] == "off" ? "/ready" : "/robots.txt",
                         env: { "RAILS_ENV" => "production", "APP_SECRET" => secret }.merge(env))
  end

  def get_ok(port, path)
    response = http_get(port, path)
    expect(response.code).to eq("200"), "GET #{path}: #{response.code} #{response.body[0, 500]}"
    response
  end

  # Requests through the whole Rails stack; returns the paths that go past ActionDispatch::Static.
  # With static files off, the middleware sits where ActionDispatch::Static would: after Rack::Sendfile.
  def exercise(port, static: true)
    stack = JSON.parse(get_ok(port, "/middleware").body)
    expect(stack.count("Rack::Objectspace")).to eq(1)
    if static
      expect(stack[stack.index("ActionDispatch::Static") + 1]).to eq("Rack::Objectspace")
    else
      expect(stack).not_to include("ActionDispatch::Static")
      expect(stack[stack.index("Rack::Sendfile") + 1]).to eq("Rack::Objectspace")
    end

    bodies = (1..3).map { |i| JSON.parse(get_ok(port, "/items/#{i}").body) }
    expect(bodies.map { |b| b["id"] }).to eq(%w[1 2 3])
    # Served by ActionDispatch::Static, before the middleware: never dumped.
    expect(get_ok(port, "/robots.txt").body).to eq("static\n") if static
    # Without ActionDispatch::Static the readiness check (GET /ready) went through the middleware too.
    [*("/ready" unless static), "/middleware", "/items/1", "/items/2", "/items/3"]
  end

  # Waits for one stored dump per path in a file:// store and checks them.
  def expect_file_dumps(dir, rails, paths)
    files = eventually(timeout: 60) do
      f = files_under(dir)
      f if f.grep(/\.meta\.json\z/).size >= paths.size
    end
    expect(files).not_to be_nil, "dumps not stored; rails log:\n#{rails.log[-3000..]}"
    expect(files.size).to eq(paths.size * 2)
    expect(files).to all(start_with("#{Socket.gethostname}/#{rails.pid}/"))
    dumps = files.grep(/\.jsonl\.gz\z/).sort.map { |f| File.binread(File.join(dir, f)) }
    metas = files.grep(/\.meta\.json\z/).map { |f| JSON.parse(File.read(File.join(dir, f))) }
    expect_rails_dumps(dumps, metas, paths)
    expect(rails.log).not_to include("at=warn")
  end

  def expect_rails_dumps(dumps, metas, paths)
    expect(metas.map { |m| m["request"]["path"] }).to match_array(paths)
    expect(metas.map { |m| m["request"]["status"] }).to all(eq(200))
    summary = heap_summary(dumps.last) # after /items: ItemsController is loaded
    expect(summary[:invalid]).to eq(0)
    expect(summary[:classes]).to include("ItemsController", "Rack::Objectspace")
    texts = dumps.map { |d| gunzip(d) } + metas.map(&:to_json)
    expect(texts.join).not_to include(secret)
  end

  it "dumps each request into Moneta over Redis (fork mode), as in the README's line" do
    redis = start_server!(:redis, name: "redis-rails")
    url = "redis://127.0.0.1:#{redis.port}/0"
    rails = boot_rails("OBJECTSPACE_REDIS_URL" => url, "OBJECTSPACE_MODE" => "fork")
    paths = exercise(rails.port)

    moneta = Moneta.new(:Redis, url: url)
    keys = eventually(timeout: 60) do
      k = moneta.each_key.to_a
      k if k.grep(/\.meta\.json\z/).size >= paths.size
    end
    expect(keys).not_to be_nil, "dumps not stored; rails log:\n#{rails.log[-3000..]}"
    expect(keys.grep_v(/\.ndjson\.gz\z/).size).to eq(paths.size * 2) # census batches aside
    dumps = keys.grep(/\.jsonl\.gz\z/).sort.map { |k| moneta[k] }
    metas = keys.grep(/\.meta\.json\z/).map { |k| JSON.parse(moneta[k]) }
    expect(metas.map { |m| m["pid"] }.uniq).to eq([rails.pid])
    expect_rails_dumps(dumps, metas, paths)
    expect(rails.log).not_to include("at=warn")
  ensure
    rails&.stop
    redis&.stop
  end

  it "dumps each request into a file:// store (inline mode)" do
    dir = Dir.mktmpdir("objectspace-rails-")
    rails = boot_rails("OBJECTSPACE_STORE" => "file://#{dir}", "OBJECTSPACE_MODE" => "inline")
    expect_file_dumps(dir, rails, exercise(rails.port))
  ensure
    rails&.stop
    FileUtils.rm_rf(dir) if dir
  end

  describe "the Railtie (config.rack_objectspace)" do
    [["on", true], ["off", false]].each do |setting, static|
      it "inserts the middleware once, #{static ? 'after ActionDispatch::Static' : 'where ActionDispatch::Static would be'}, " \
         "with static files #{setting}, and logs one line at boot" do
        dir = Dir.mktmpdir("objectspace-railtie-")
        rails = boot_rails("OBJECTSPACE_STORE" => "file://#{dir}", "OBJECTSPACE_MODE" => "fork",
                           "OBJECTSPACE_WIRING" => "railtie", "OBJECTSPACE_STATIC" => setting)
        expect_file_dumps(dir, rails, exercise(rails.port, static: static))
        started = events(rails.log, "started")
        expect(started.size).to eq(1)
        expect(started.first).to include("mode=fork", "dump=full", "store=file://#{dir}", "every=1", "tracer=native")
      ensure
        rails&.stop
        FileUtils.rm_rf(dir) if dir
      end
    end

    it "takes its switch and options from RACK_OBJECTSPACE_* variables alone (static files off)" do
      dir = Dir.mktmpdir("objectspace-railtie-env-")
      rails = boot_rails("OBJECTSPACE_WIRING" => "railtie-env", "OBJECTSPACE_STATIC" => "off",
                         "RACK_OBJECTSPACE_ENABLED" => "1", "RACK_OBJECTSPACE_STORE" => "file://#{dir}",
                         "RACK_OBJECTSPACE_MODE" => "inline", "RACK_OBJECTSPACE_EVERY" => "1")
      expect_file_dumps(dir, rails, exercise(rails.port, static: false))
      expect(events(rails.log, "started").first).to include("mode=inline")
    ensure
      rails&.stop
      FileUtils.rm_rf(dir) if dir
    end

    it "stays out of the stack unless enabled" do
      rails = boot_rails("OBJECTSPACE_WIRING" => "railtie-env", "OBJECTSPACE_STATIC" => "off")
      expect(JSON.parse(get_ok(rails.port, "/middleware").body)).not_to include("Rack::Objectspace")
    ensure
      rails&.stop
    end

    it "refuses an option Rack::Objectspace does not take, naming it, at boot" do
      out, status = rails_runner("OBJECTSPACE_WIRING" => "railtie", "OBJECTSPACE_STORE" => "memory://x",
                                 "OBJECTSPACE_EXTRA_OPTION" => "1")
      expect(status).not_to be_success
      expect(out).to include("ArgumentError", "config.rack_objectspace.stroe: not an option of Rack::Objectspace")
    end
  end

  # Issue 21's proof, as a user runs it: the Railtie on its defaults (the
  # census, and the dumps it asks for) in a Rails app under puma -w 2 -t 4:4,
  # a controller that subscribes on every GET /reports/:id, and `leaks` read
  # cold after the server stopped.
  it "names the subscribe line of a leak ActiveSupport allocates, as one finding over 2 workers, " \
     "with its endpoint and holder" do
    dir = Dir.mktmpdir("objectspace-rails-leak-")
    rails = start_server!(:puma, rackup: File.join(RAILS_APP, "config.ru"), workers: 2, threads: 4, name: "rails-leak",
                                 env: { "RAILS_ENV" => "production", "OBJECTSPACE_WIRING" => "railtie-env",
                                        "OBJECTSPACE_STATIC" => "off", "RACK_OBJECTSPACE_ENABLED" => "1",
                                        "RACK_OBJECTSPACE_STORE" => "file://#{dir}" })
    # 3,000 requests on 4 connections: a third subscribe, the rest go to /items/:id.
    4.times.map do |t|
      Thread.new do
        Net::HTTP.start("127.0.0.1", rails.port) do |http|
          750.times do |i|
            k = t * 750 + i
            response = http.get((k % 3).zero? ? "/reports/#{k}" : "/items/#{k % 50}")
            raise "#{response.code} #{response.body[0, 200]}" unless response.code == "200"
          end
        end
      end
    end.each(&:join)
    # Each dump the census asked for lands before the server stops, as a
    # person would wait for it: stopping signals the whole process group,
    # and a dump child still writing is killed with it.
    eventually(timeout: 60) do
      asked = events(rails.log, "census_asks_dump").size
      asked.positive? && Dir.glob("#{dir}/**/*.meta.json").size >= asked
    end
    rails.stop(grace: 60) # the workers' last census batches land at exit

    out, err, status = Open3.capture3(RbConfig.ruby, File.join(TestServers::ROOT, "exe", "rack-objectspace"),
                                      "leaks", dir, "--format", "json")
    expect(status).to be_success, err
    report = JSON.parse(out)
    expect(report["processes"].size).to eq(2)
    subscribe = report["findings"].find { |f| f.dig("app_line", "file")&.end_with?("reports_controller.rb") }
    expect(subscribe).not_to be_nil, report["findings"].map { |f| f["headline"]["location"] }.inspect
    controller = File.join(RAILS_APP, "app", "controllers", "reports_controller.rb")
    line = File.readlines(controller).index { |l| l.include?("# the subscribe leak") } + 1
    expect(subscribe["app_line"]).to include("file" => controller, "line" => line)
    # One leak, one finding: the subscriber, its Proc, the controller, request,
    # response and env its block keeps, in both workers, each with its figures.
    expect(subscribe["sites"].size).to be >= 10
    expect(subscribe["processes"].size).to eq(2)
    expect(subscribe["allocated_by"].first).to include("method" => "GET", "path" => "/reports/:id")
    expect(subscribe["holder"]["within"]).to include("name" => "ActiveSupport::Notifications")
    # ItemsController's own small leak is the other finding; nothing else grows.
    items = report["findings"] - [subscribe]
    expect(items.map { |f| f["headline"]["location"] }).to eq([File.join(RAILS_APP, "app", "controllers",
                                                                          "items_controller.rb:10")])
  ensure
    rails&.stop
    FileUtils.rm_rf(dir) if dir
  end

  # Boots the fixture app without a server (config/environment.rb) and prints the stack.
  def rails_runner(env)
    script = "require #{File.join(RAILS_APP, 'config', 'environment').inspect}; " \
             "puts Rails.application.middleware.map(&:inspect)"
    env = { "RAILS_ENV" => "production", "RUBYLIB" => File.join(TestServers::ROOT, "lib") }.merge(env)
    out, status = Open3.capture2e(env, RbConfig.ruby, "-e", script)
    [out, status]
  end

  it "documents the README's hand-written line failing when static files are off (use the Railtie then)" do
    out, status = rails_runner("OBJECTSPACE_STORE" => "memory://x", "OBJECTSPACE_STATIC" => "off")
    expect(status).not_to be_success
    expect(out).to include("No such middleware to insert after: ActionDispatch::Static")
  end
end
