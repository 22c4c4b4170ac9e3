# frozen_string_literal: true

require "logger"
require "stringio"

# When the middleware starts its work (the first request it serves), when a
# dump is taken (once the response is out, even if an outer middleware drops
# the body), and where it logs when no logger is given.
RSpec.describe "Rack::Objectspace's life in a process" do
  let(:app) { ->(_env) { [200, { "content-type" => "text/plain" }, ["ok"]] } }

  it "costs a process that never serves nothing: the tracer starts with the first request" do
    Rack::Objectspace::Native::Tracer.stop
    Dir.mktmpdir("lazy-") do |dir|
      middleware = Rack::Objectspace.new(app, store: "file://#{dir}", mode: :inline, dump: :full, trace: :native, every: 1,
                                              logger: quiet_logger)
      expect(Rack::Objectspace::Native::Tracer.enabled?).to be(false)
      expect(Rack::Objectspace::Native::Tracer.stats[:recorded]).to eq(0)

      _status, _headers, body = middleware.call(Rack::MockRequest.env_for("/first"))
      body.close
      expect(Rack::Objectspace::Native::Tracer.enabled?).to be(true)
      expect(middleware.flush(10)).to include(stored: 1)
    end
  end

  it "registers no exit flush in a process that builds the stack and exits (rake, a console)" do
    script = <<~RUBY
      require "rack/objectspace"
      Rack::Objectspace.new(->(_) { [200, {}, []] }, store: "file://#{Dir.mktmpdir}", logger: Logger.new($stdout))
      Rack::Objectspace::Dumper.prepend(Module.new { def shutdown(*) = puts("shutdown ran") })
    RUBY
    out = IO.popen([RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", script], &:read)
    expect(out).not_to include("shutdown ran")
  end

  it "dumps when the server says the response is finished, even if an outer middleware drops the body" do
    Dir.mktmpdir("finished-") do |dir|
      middleware = Rack::Objectspace.new(app, store: "file://#{dir}", mode: :inline, dump: :retained,
                                              logger: quiet_logger)
      # An outer middleware that flattens the body and never closes it.
      flattening = lambda do |env|
        status, headers, body = middleware.call(env)
        chunks = []
        body.each { |c| chunks << c }
        [status, headers, chunks]
      end
      env = Rack::MockRequest.env_for("/flattened").merge("rack.response_finished" => [])
      status, headers, = flattening.call(env)
      expect(middleware.flush(5)).to include(dumped: 0)
      # The server, once the response is written (Rack 3):
      env["rack.response_finished"].each { |callback| callback.call(env, status, headers, nil) }
      expect(middleware.flush(10)).to include(dumped: 1, stored: 1)
    end
  end

  it "logs to env[\"rack.logger\"] when no logger is given" do
    io = StringIO.new
    middleware = Rack::Objectspace.new(app, store: {}, token: "t" * 16, every: nil)
    env = Rack::MockRequest.env_for("/x", "HTTP_X_OBJECTSPACE_TOKEN" => "wrong-token-wrong")
    env["rack.logger"] = Logger.new(io)
    expect(middleware.call(env).first).to eq(200)
    expect(io.string).to include("event=trigger_refused", "at=warn")
  end
end
