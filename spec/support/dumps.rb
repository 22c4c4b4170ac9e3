# frozen_string_literal: true

require "socket"

# Helpers to read back what the middleware stored.
module DumpHelpers
  # Run the block with ENV updated by `vars` (a nil value deletes the variable);
  # ENV is restored afterwards, with whatever the block changed in it.
  # A TCP server on 127.0.0.1 that accepts connections and never answers: an
  # S3 endpoint that hangs. Yields the AWS_* variables that point at it.
  def with_hanging_s3
    hole = TCPServer.new("127.0.0.1", 0)
    held = []
    acceptor = Thread.new { loop { held << hole.accept } }
    with_env("AWS_ENDPOINT" => "http://127.0.0.1:#{hole.addr[1]}", "AWS_ACCESS_KEY_ID" => "test",
             "AWS_SECRET_ACCESS_KEY" => "test", "AWS_REGION" => "us-east-1", "AWS_ENDPOINT_URL" => nil) do
      yield
    end
  ensure
    acceptor&.kill
    held&.each(&:close)
    hole&.close
  end

  def with_env(vars)
    saved = ENV.to_h
    vars.each { |name, value| value.nil? ? ENV.delete(name) : ENV[name] = value }
    yield
  ensure
    ENV.replace(saved)
  end

  # Status codes of n GETs to path/0, path/1, ...
  def serve_statuses(app, n, path: "/r")
    Array.new(n) { |i| Rack::MockRequest.new(app).get("#{path}/#{i}").status }
  end

  # An app that keeps `payload` alive as long as itself, as a cache or config would.
  def holder_app(payload)
    held = payload
    ->(_env) { [200, { "Content-Type" => "text/plain", "X-Held" => held.size.to_s }, ["ok"]] }
  end

  # Gunzipped JSON lines of a stored dump.
  def gunzip(bytes)
    Zlib::GzipReader.new(StringIO.new(bytes)).read
  end

  # Parsed records of a stored dump.
  def records(bytes)
    gunzip(bytes).each_line.map { |line| JSON.parse(line) }
  end

  # Every file under dir, relative, sorted; census batches (*.ndjson.gz, on
  # by default, see spec/rack/census_spec.rb) left out.
  def files_under(dir)
    Dir.glob("**/*", base: dir).select { |f| File.file?(File.join(dir, f)) && !f.end_with?(".ndjson.gz") }.sort
  end

  # A Rack app wrapped in Rack::Lint on both sides of the middleware. These
  # specs are about dumps: every request is dumped unless they say otherwise
  # (with the census on, the middleware's own default is every: nil).
  def linted(app, **options)
    middleware = Rack::Objectspace.new(Rack::Lint.new(app), logger: quiet_logger, every: 1, **options)
    [Rack::Lint.new(middleware), middleware]
  end

  # This process's dump children, zombies included: { pid:, state: } each. A
  # child names itself "rack-objectspace dump (worker PID)" as its first act;
  # a zombie has no cmdline left, so any child that is not a test server counts.
  def dump_children
    me = Process.pid.to_s
    servers = TestServers.started.map { |s| s.pid.to_s }
    Dir.glob("/proc/[0-9]*").filter_map do |dir|
      stat = File.read("#{dir}/stat")
      fields = stat[(stat.rindex(")") + 2)..].split
      next unless fields[1] == me && !servers.include?(File.basename(dir))

      { pid: Integer(File.basename(dir)), state: fields[0] }
    rescue Errno::ENOENT, Errno::ESRCH
      nil
    end
  end

  def quiet_logger
    @quiet_logger ||= Logger.new(StringIO.new)
  end

  def logged
    quiet_logger.instance_variable_get(:@logdev).dev.string
  end
end

RSpec.configure { |c| c.include DumpHelpers }
