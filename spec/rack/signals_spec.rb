# frozen_string_literal: true

# The native glue waits without the GVL (flushes, a dump's upload). Ruby wakes
# such a wait for anything the thread might have to do: Ctrl-C, Thread#raise,
# a signal the app traps, and on 3.3+ every child that exits (SIGCHLD; in fork
# mode dump children exit all the time). Only a raise may end the wait.
RSpec.describe "Native waits and signals" do
  around do |example|
    @trapped = 0
    previous = trap("USR1") { @trapped += 1 }
    example.run
  ensure
    trap("USR1", previous || "DEFAULT")
  end

  # While the block waits, a child exits and the app's trapped USR1 arrives.
  def with_signals_during(wait)
    poker = Thread.new do
      sleep wait / 4.0
      pid = Process.fork { exit!(0) }
      sleep wait / 4.0
      Process.kill(:USR1, Process.pid)
      Process.wait(pid)
    end
    yield
  ensure
    poker&.join
  end

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  it "Writer#flush waits out its timeout through a child's exit and a trapped signal" do
    with_hanging_s3 do
      writer = Rack::Objectspace::Native::Writer.new("s3://hanging/p", 4)
      pipeline = Rack::Objectspace::Native::Pipeline.new(redact: true, gzip_level: 1, sites: false, since: nil)
      IO.for_fd(pipeline.write_fd, autoclose: false).write("{}\n")
      writer.submit("a/key", "a/meta", pipeline.finish("{}"))
      started = now
      done = with_signals_during(1.2) { writer.flush(1.2) }
      expect(done).to be(false) # the store hangs: the time ran out, nothing was raised
      expect(now - started).to be >= 1.1
      expect(@trapped).to eq(1)
    end
  end

  it "a middleware's flush (dumps and census batches) raises no Interrupt for them" do
    with_hanging_s3 do
      app = ->(_env) { [200, {}, ["ok"]] }
      middleware = Rack::Objectspace.new(app, store: "s3://hanging/p", every: nil, logger: quiet_logger)
      Rack::MockRequest.new(middleware).get("/")
      stats = with_signals_during(1.2) { middleware.flush(1.2) }
      expect(stats[:census][:requests]).to eq(1)
      expect(@trapped).to eq(1)
    end
  end

  it "Pipeline#finish waits for its reader through a child's exit and a trapped signal" do
    pipeline = Rack::Objectspace::Native::Pipeline.new(redact: true, gzip_level: 1, sites: false, since: nil)
    # Another holder of the write end (as a fork would be) keeps the reader
    # from EOF until it lets go, after the signals.
    copy = IO.for_fd(pipeline.write_fd, autoclose: false).dup
    IO.for_fd(pipeline.write_fd, autoclose: false).write(%({"type":"ROOT"}\n))
    closer = Thread.new { sleep 1.0; copy.close }
    dump = with_signals_during(0.8) { pipeline.finish("{}") }
    closer.join
    expect(JSON.parse(dump.meta)).to be_a(Hash)
    expect(@trapped).to eq(1)
  end

  it "still raises what Thread#raise sends during such a wait" do
    pipeline = Rack::Objectspace::Native::Pipeline.new(redact: true, gzip_level: 1, sites: false, since: nil)
    copy = IO.for_fd(pipeline.write_fd, autoclose: false).dup
    main = Thread.current
    raiser = Thread.new { sleep 0.3; main.raise(ArgumentError, "stop waiting") }
    expect { pipeline.finish("{}") }.to raise_error(ArgumentError, "stop waiting")
  ensure
    raiser&.join
    copy&.close
  end
end
