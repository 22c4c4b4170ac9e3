# frozen_string_literal: true

# What the middleware tells its user: one line at boot, one summary of stored,
# dropped and failed dumps at flush (and so at exit), and the request count each
# dump's metadata carries (what `leaks` divides by).
RSpec.describe "Rack::Objectspace reporting" do
  let(:app) { ->(_env) { [200, { "Content-Type" => "text/plain" }, ["ok"]] } }

  # A Hash store slower than the requests: the queue in front of it fills.
  class SlowHashStore < Hash # rubocop:disable Lint/ConstantDefinitionInBlock
    def []=(key, value)
      sleep 0.3
      super
    end
  end

  it "logs one info line at boot with mode, dump, store, every and tracer" do
    dir = Dir.mktmpdir("objectspace-boot-")
    Rack::Objectspace.new(app, store: "file://#{dir}", mode: :inline, dump: :retained, every: 5,
                               logger: quiet_logger)
    lines = events(logged, "started")
    expect(lines.size).to eq(1)
    expect(lines.first).to include("mode=inline", "dump=retained", "store=file://#{dir}", "every=5",
                                   "tracer=objspace", "at=info")
  ensure
    ObjectSpace.trace_object_allocations_stop
    FileUtils.rm_rf(dir) if dir
  end

  it "says at boot whether the census is on, and that every: nil dumps only on demand or when the census asks" do
    Rack::Objectspace.new(app, store: {}, logger: quiet_logger, every: nil)
    Rack::Objectspace.new(app, store: {}, logger: quiet_logger, every: nil, token: "t" * 32, census: false)
    Rack::Objectspace.new(app, store: {}, logger: quiet_logger, every: nil, census: :sampled, sample_rate: 50)
    census_only, on_demand, sampled = events(logged, "started")
    expect(census_only).to include("every=never", "auto_dump=600", "census=on")
    expect(census_only).not_to include("sample_rate")
    expect(on_demand).to include("every=on_demand", "auto_dump=off", "census=off")
    expect(sampled).to include("census=sampled", "sample_rate=50")
  ensure
    Rack::Objectspace::Native::Tracer.sample(1, nil)
  end

  it "names a []= store by its class and keeps credentials of a URL out of the log" do
    Rack::Objectspace.new(app, store: {}, logger: quiet_logger, trace: false)
    expect(events(logged, "started").first).to include("store=Hash", "tracer=off", "every=1")
    expect(Rack::Objectspace::Log.describe_store("s3://AKIA:secret@bucket/prefix?token=abc"))
      .to eq("s3://bucket/prefix")
  end

  it "records in each dump's metadata how many requests the process served, dumped or not" do
    store = {}
    app_, middleware = linted(app, store: store, mode: :inline, every: 3, trace: false)
    expect(serve_statuses(app_, 7)).to all(eq(200))
    middleware.flush(30)
    metas = store.keys.grep(/\.meta\.json\z/).sort.map { |k| JSON.parse(store[k]) }
    expect(metas.map { |m| [m["seq"], m["requests"]] }).to eq([[1, 1], [2, 4], [3, 7]])
  end

  # A []= store whose writes wait until the spec opens the gate: the queue
  # stays full however long a dump takes.
  class GatedHashStore < Hash # rubocop:disable Lint/ConstantDefinitionInBlock
    attr_reader :gate

    def initialize
      super
      @gate = Queue.new
    end

    def []=(key, value)
      @gate.pop
      super
    end
  end

  it "logs one summary line with stored, dropped and failed counts at flush, at warn when dumps were lost" do
    store = GatedHashStore.new
    app_, middleware = linted(app, store: store, mode: :inline, queue_size: 1, trace: false)
    expect(serve_statuses(app_, 6)).to all(eq(200))
    12.times { store.gate << true }
    stats = middleware.flush(30)
    expect(stats[:dropped]).to be >= 1
    lines = events(logged, "dump_summary")
    expect(lines.size).to eq(1)
    expect(lines.first).to include("stored=#{stats[:stored]}", "dropped=#{stats[:dropped]}", "failed=0", "at=warn")

    # No new loss: the next flush's line is at debug (a console flushing after each request stays quiet).
    middleware.flush(5)
    expect(events(logged, "dump_summary").size).to eq(2)
    expect(events(logged, "dump_summary").last).to include("dropped=#{stats[:dropped]}", "at=debug")
  end

  it "logs the summary at exit too, at info when nothing was lost" do
    script = <<~RUBY
      require "rack/objectspace"
      require "rack/mock"
      app = Rack::Objectspace.new(->(_) { [200, {}, ["ok"]] }, store: {}, mode: :inline, trace: false)
      2.times { |i| Rack::MockRequest.new(app).get("/x/\#{i}") }
    RUBY
    _out, err, status = Open3.capture3(RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script)
    expect(status).to be_success
    expect(events(err, "dump_summary")).to match([/stored=2 dropped=0 failed=0 .*at=info/])
  end

  it "logs the summary at exit too (a process that dropped dumps says so before it ends)" do
    script = <<~RUBY
      require "rack/objectspace"
      require "rack/mock"
      slow = Class.new(Hash) { def []=(k, v); sleep 0.3; super; end }.new
      app = Rack::Objectspace.new(->(_) { [200, {}, ["ok"]] }, store: slow, mode: :inline, queue_size: 1, trace: false)
      4.times { |i| Rack::MockRequest.new(app).get("/x/\#{i}") }
    RUBY
    _out, err, status = Open3.capture3(RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script)
    expect(status).to be_success
    expect(events(err, "dump_summary").size).to eq(1)
    expect(events(err, "dump_summary").first).to match(/stored=\d+ dropped=[1-9]\d* failed=0 .*at=warn/)
  end
end
