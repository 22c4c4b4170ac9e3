# frozen_string_literal: true

require "moneta"
require "securerandom"

# A real Rails 6.1 app (spec/fixtures/rails_app) served by puma, with
# `config.middleware.insert_after ActionDispatch::Static, Rack::Objectspace, store: ...`:
# requests go through the whole stack and their dumps are stored.
RSpec.describe "Rack::Objectspace in a Rails app" do
  RAILS_APP = File.join(TestServers::FIXTURES, "rails_app") # rubocop:disable Lint/ConstantDefinitionInBlock

  before(:all) do
    require "rails"
  rescue LoadError
    skip "Rails is not installed (apt-get install ruby-rails, or bin/setup)"
  end

  let(:secret) { "s3cr3t-#{SecureRandom.hex(16)}" }

  def boot_rails(env)
    start_server!(:puma, rackup: File.join(RAILS_APP, "config.ru"), threads: 1, name: "rails",
                         ready_path: "/robots.txt",
                         env: { "RAILS_ENV" => "production", "APP_SECRET" => secret }.merge(env))
  end

  def get_ok(port, path)
    response = http_get(port, path)
    expect(response.code).to eq("200"), "GET #{path}: #{response.code} #{response.body[0, 500]}"
    response
  end

  # Requests through the whole Rails stack; returns the paths that go past ActionDispatch::Static.
  def exercise(port)
    stack = JSON.parse(get_ok(port, "/middleware").body)
    static = stack.index("ActionDispatch::Static")
    expect(static).not_to be_nil
    expect(stack[static + 1]).to eq("Rack::Objectspace")

    bodies = (1..3).map { |i| JSON.parse(get_ok(port, "/items/#{i}").body) }
    expect(bodies.map { |b| b["id"] }).to eq(%w[1 2 3])
    # Served by ActionDispatch::Static, before the middleware: never dumped.
    expect(get_ok(port, "/robots.txt").body).to eq("static\n")
    ["/middleware", "/items/1", "/items/2", "/items/3"]
  end

  def expect_rails_dumps(dumps, metas, paths)
    expect(metas.map { |m| m["request"]["path"] }).to match_array(paths)
    expect(metas.map { |m| m["request"]["status"] }).to all(eq(200))
    summary = heap_summary(dumps.first)
    expect(summary[:invalid]).to eq(0)
    expect(summary[:classes]).to include("ItemsController", "ActionDispatch::Static", "Rack::Objectspace")
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
    paths = exercise(rails.port)
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
  ensure
    rails&.stop
    FileUtils.rm_rf(dir) if dir
  end
end
