# frozen_string_literal: true

require "moneta"
require "redis"
require "securerandom"

# Moneta over a real redis-server as the []= store (the line users know:
# `store: Moneta.new(:Redis)`), in fork and inline modes, and Redis failing.
RSpec.describe "Rack::Objectspace with Moneta over a real Redis", :slow do
  # An app holding a known secret on the heap, as a session store or config would.
  class SecretHoldingApp # rubocop:disable Lint/ConstantDefinitionInBlock
    attr_reader :secret

    def initialize(secret)
      @secret = secret
    end

    def call(_env)
      [200, { "Content-Type" => "text/plain" }, ["ok"]]
    end
  end

  before(:all) do
    @redis = start_server!(:redis)
    @url = "redis://127.0.0.1:#{@redis.port}/0"
  end

  after(:all) { @redis&.stop }

  let(:secret) { "s3cr3t-#{SecureRandom.hex(16)}" }
  let(:raw) { Redis.new(url: @url) }
  let(:moneta) { Moneta.new(:Redis, url: @url) }

  before { raw.flushdb }

  # Every value stored, read back through Moneta, gunzipped where gzip.
  def stored_texts
    moneta.each_key.map do |key|
      value = moneta[key]
      value.b.start_with?("\x1f\x8b".b) ? gunzip(value) : value
    end
  end

  %i[fork inline].each do |mode|
    context "in #{mode} mode" do
      it "stores each dump and its metadata, readable back through Moneta as heap records" do
        app, middleware = linted(SecretHoldingApp.new(secret), store: moneta, mode: mode, max_children: 4,
                                                              queue_size: 8)
        expect(serve_statuses(app, 3)).to eq([200, 200, 200])
        stats = middleware.flush(60)
        expect(stats).to include(dumped: 3, stored: 3, failed: 0, dropped: 0, pending: 0)

        keys = moneta.each_key.to_a.sort
        dumps = keys.grep(/\.jsonl\.gz\z/)
        metas = keys.grep(/\.meta\.json\z/)
        expect(dumps.size).to eq(3)
        expect(metas.map { |k| k.sub(".meta.json", "") }).to match_array(dumps.map { |k| k.sub(".jsonl.gz", "") })
        host = Socket.gethostname
        expect(dumps).to all(match(%r{\A#{Regexp.escape(host)}/#{Process.pid}/\d{6}-\d+-GET-[^/]+\.jsonl\.gz\z}))

        summary = heap_summary(moneta[dumps.first])
        expect(summary[:lines]).to be > 1000
        expect(summary[:invalid]).to eq(0)
        expect(summary[:types]).to include("ROOT", "STRING", "CLASS", "OBJECT")
        expect(summary[:classes]).to include("SecretHoldingApp")

        meta = JSON.parse(moneta[metas.first])
        expect(meta).to include("pid" => Process.pid, "mode" => mode.to_s, "redacted" => true)
        expect(meta["request"]).to include("method" => "GET", "status" => 200)
      end

      it "never stores a string value of the app under default options (and does with redact: false)" do
        app, middleware = linted(SecretHoldingApp.new(secret), store: moneta, mode: mode)
        expect(serve_statuses(app, 1)).to eq([200])
        expect(middleware.flush(60)).to include(stored: 1, failed: 0)
        texts = stored_texts
        expect(texts.size).to eq(3) # dump, metadata and a census batch, none with the secret
        expect(texts.join).not_to include(secret)
        expect(raw.keys("*").map { |k| raw.get(k) }.join.b).not_to include(secret.b)

        # The control: the secret is on the heap, so a dump that keeps values has it.
        raw.flushdb
        app, middleware = linted(SecretHoldingApp.new(secret), store: moneta, mode: mode, redact: false)
        serve_statuses(app, 1)
        expect(middleware.flush(60)).to include(stored: 1)
        expect(stored_texts.join).to include(secret)
      end

      it "stores each object under <dump-key>/<address> with layout: :object" do
        app, middleware = linted(SecretHoldingApp.new(secret), store: moneta, mode: mode, layout: :object,
                                                              dump: :retained, census: false) # keys: dumps' only
        # The first request sets the baseline; the second's retained dump is small.
        expect(serve_statuses(app, 2)).to eq([200, 200])
        expect(middleware.flush(120)).to include(dumped: 2, stored: 2, failed: 0)

        keys = moneta.each_key.to_a
        metas = keys.grep(/\.meta\.json\z/)
        expect(metas.size).to eq(2)
        dump_keys = metas.map { |k| k.sub(/\.meta\.json\z/, ".jsonl.gz") }
        object_keys = keys - metas
        expect(object_keys).to all(satisfy { |k| dump_keys.any? { |d| k.start_with?("#{d}/") } })
        expect(dump_keys.map { |d| object_keys.count { |k| k.start_with?("#{d}/") } }).to all(be > 0)
        expect(keys & dump_keys).to be_empty # no whole-dump value in this layout

        first = object_keys.select { |k| k.start_with?("#{dump_keys.min}/") }
        expect(first.size).to be > 10
        addressed = first.reject { |k| k.include?("/root-") }
        sample = addressed.sample(50, random: Random.new(1))
        sample.each do |key|
          record = JSON.parse(moneta[key])
          expect(key).to end_with("/#{record['address']}")
        end
        expect(object_keys.map { |k| moneta[k] }.join).not_to include(secret)
      end
    end
  end

  describe "when Redis fails" do
    # Every request was dumped (every: 1), so each one ends stored, failed or dropped.
    def failing_redis_stats(middleware, requests)
      stats = middleware.flush(60)
      expect(stats[:pending]).to eq(0)
      expect(stats[:stored] + stats[:failed] + stats[:dropped]).to eq(requests)
      stats
    end

    %i[fork inline].each do |mode|
      it "serves every request and counts failures, logging them once per burst, when Redis is down from the start (#{mode})" do
        down = Moneta.new(:Redis, url: "redis://127.0.0.1:#{TestServers.free_port}/0",
                                  connect_timeout: 0.5, timeout: 0.5)
        app, middleware = linted(SecretHoldingApp.new(secret), store: down, mode: mode, dump: :retained,
                                                              max_children: 2, queue_size: 2)
        expect(serve_statuses(app, 12)).to all(eq(200))
        stats = failing_redis_stats(middleware, 12)
        expect(stats[:stored]).to eq(0)
        expect(stats[:failed]).to be >= 1
        expect(events(logged, "store_failed").size).to eq(1)
        expect(events(logged, "store_failed").first).to match(/at=warn/).and match(/Redis::CannotConnectError|ECONNREFUSED/)
      end
    end

    it "serves every request when Redis is killed in the middle of a run, and counts what it could not store" do
      redis = start_server!(:redis, name: "redis-killed")
      store = Moneta.new(:Redis, url: "redis://127.0.0.1:#{redis.port}/0", connect_timeout: 0.5, timeout: 0.5)
      app, middleware = linted(SecretHoldingApp.new(secret), store: store, mode: :inline, dump: :retained,
                                                            queue_size: 16)
      expect(serve_statuses(app, 4)).to all(eq(200))
      expect(middleware.flush(60)).to include(dumped: 4, stored: 4, failed: 0)

      redis.kill
      expect(serve_statuses(app, 10)).to all(eq(200))
      stats = failing_redis_stats(middleware, 14)
      expect(stats).to include(dumped: 14, stored: 4)
      expect(stats[:failed] + stats[:dropped]).to eq(10)
      expect(stats[:failed]).to be >= 1
      expect(events(logged, "store_failed").size).to eq(1)
    ensure
      redis&.stop
    end
  end
end
