# frozen_string_literal: true

require "socket"
require "timeout"
require "tmpdir"
require "fileutils"
require "net/http"
require "rbconfig"

# Real servers for the integration specs (and bench/), started on 127.0.0.1
# with free ports and always stopped: redis-server, moto (an S3-compatible
# server) and puma. Usable without RSpec (bench/load.rb requires this file).
module TestServers
  ROOT = File.expand_path("../..", __dir__)
  FIXTURES = File.join(ROOT, "spec", "fixtures")

  # Raised when a server's binary is not installed (the spec is skipped; under CI it fails).
  class Missing < StandardError; end

  # One spawned server process (its own process group, so puma's workers go too).
  class Server
    attr_reader :name, :pid, :port, :log_path

    def initialize(name, command, port:, env: {}, chdir: ROOT, ready: nil, timeout: 30)
      @name = name
      @port = port
      @log_path = File.join(TestServers.log_dir, "#{name}-#{port}.log")
      @pid = Process.spawn(env, *command, chdir: chdir, pgroup: true, in: File::NULL,
                                          %i[out err] => [@log_path, "w"])
      TestServers.started << self
      wait_ready(ready || -> { TestServers.port_open?(port) }, timeout)
    end

    def alive?
      return false unless @pid

      Process.waitpid(@pid, Process::WNOHANG).nil?
    rescue Errno::ECHILD
      false
    end

    def log
      File.exist?(@log_path) ? File.read(@log_path) : ""
    end

    # TERM (or `signal`) to the process group, KILL after `grace` seconds; reaps it.
    def stop(signal: "TERM", grace: 10)
      return unless @pid

      pid = @pid
      @pid = nil
      TestServers.started.delete(self)
      signal_group(signal, pid)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + grace
      loop do
        break if Process.waitpid(pid, Process::WNOHANG)
        if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          signal_group("KILL", pid)
          Process.waitpid(pid)
          break
        end
        sleep 0.02
      end
      # Stray members of the group (puma workers) go too.
      signal_group("KILL", pid)
    rescue Errno::ECHILD
      nil
    end

    # SIGKILL, no grace: a crash.
    def kill
      stop(signal: "KILL", grace: 5)
    end

    private

    def signal_group(signal, pid)
      Process.kill(signal, -pid)
    rescue Errno::ESRCH, Errno::EPERM
      nil
    end

    def wait_ready(check, timeout)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      until check.call
        unless alive?
          @pid = nil
          TestServers.started.delete(self)
          raise "#{@name} exited before it was ready; its log (#{@log_path}):\n#{log[-3000..] || log}"
        end
        if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          stop
          raise "#{@name} was not ready on 127.0.0.1:#{@port} within #{timeout}s; its log:\n#{log[-3000..] || log}"
        end
        sleep 0.05
      end
    end
  end

  class << self
    def started
      @started ||= []
    end

    def log_dir
      @log_dir ||= Dir.mktmpdir("rack-objectspace-servers-")
    end

    def stop_all
      started.dup.each(&:stop)
    end

    # A port nothing listens on right now.
    def free_port
      server = TCPServer.new("127.0.0.1", 0)
      server.addr[1]
    ensure
      server&.close
    end

    def port_open?(port)
      Socket.tcp("127.0.0.1", port, connect_timeout: 0.2, &:close)
      true
    rescue SystemCallError, SocketError, IOError
      false
    end

    def which(name)
      ENV["PATH"].split(File::PATH_SEPARATOR).map { |d| File.join(d, name) }
                 .find { |p| File.file?(p) && File.executable?(p) }
    end

    def require_binary!(name, hint)
      which(name) || raise(Missing, "#{name} is not installed (#{hint})")
    end

    # A new redis-server: no persistence, not daemonized.
    def redis(name: "redis")
      bin = require_binary!("redis-server", "apt-get install redis-server, or bin/setup")
      port = free_port
      Server.new(name, [bin, "--port", port.to_s, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--daemonize", "no"], port: port)
    end

    def moto_command
      python = which("python3") || raise(Missing, "python3 is not installed")
      ok = system(python, "-c", "import moto.server", out: File::NULL, err: File::NULL)
      raise Missing, "moto[server] is not installed (pip install 'moto[server]', or bin/setup)" unless ok

      [python, "-m", "moto.server"]
    end

    # moto's S3-compatible server; ready when it answers HTTP.
    def moto
      port = free_port
      ready = lambda do
        Net::HTTP.start("127.0.0.1", port, open_timeout: 0.5, read_timeout: 2) { |h| h.get("/").code.to_i < 500 }
      rescue StandardError
        false
      end
      Server.new("moto", [*moto_command, "-H", "127.0.0.1", "-p", port.to_s], port: port, ready: ready, timeout: 60)
    end

    # Azurite's blob service (an Azure Storage emulator, from npm: `npm install -g azurite`).
    def azurite
      bin = require_binary!("azurite-blob", "npm install -g azurite")
      port = free_port
      Server.new("azurite", [bin, "--blobHost", "127.0.0.1", "--blobPort", port.to_s, "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--silent"], port: port, timeout: 60)
    end

    # puma serving `rackup` (a config.ru), single mode or `workers:` cluster mode.
    # `env` goes to the server (the fixture config.ru reads OBJECTSPACE_* from it).
    # Ready once GET `ready_path` answers 200.
    # `wrap`: a command puma runs under (["valgrind", ...]).
    def puma(rackup: File.join(FIXTURES, "puma", "config.ru"), workers: 0, threads: 4, env: {}, preload: true,
             name: "puma", timeout: 60, ready_path: "/ready", wrap: [])
      bin = require_binary!("puma", "apt-get install puma, or bin/setup")
      port = free_port
      command = [*wrap, RbConfig.ruby, bin, "-b", "tcp://127.0.0.1:#{port}", "-t", "#{threads}:#{threads}",
                 "-e", env.fetch("RACK_ENV", "production")]
      command += ["-w", workers.to_s] if workers.positive?
      command << "--preload" if workers.positive? && preload
      command << rackup
      ready = lambda do
        Net::HTTP.start("127.0.0.1", port, open_timeout: 0.5, read_timeout: 10) { |h| h.get(ready_path).code == "200" }
      rescue StandardError
        false
      end
      env = { "RUBYLIB" => [File.join(ROOT, "lib"), ENV.fetch("RUBYLIB", nil)].compact.join(File::PATH_SEPARATOR) }
            .merge(env)
      Server.new(name, command, port: port, env: env, ready: ready, timeout: timeout, chdir: File.dirname(rackup))
    end
  end
end

at_exit { TestServers.stop_all }

if defined?(RSpec) && RSpec.respond_to?(:configure)
  # Spec helpers: start a server or skip the example group with the reason (fail it under CI).
  module ServerHelpers
    def start_server!(kind, **options)
      TestServers.public_send(kind, **options)
    rescue TestServers::Missing => e
      skip_outside_ci(e.message)
    end

    # GET http://127.0.0.1:port/path; a fresh connection each time.
    def http_get(port, path, headers = {}, timeout: 30)
      Net::HTTP.start("127.0.0.1", port, open_timeout: 5, read_timeout: timeout) do |http|
        http.get(path, headers)
      end
    end

    # Block until `condition` is truthy or `timeout` seconds pass; returns its last value.
    def eventually(timeout: 20, interval: 0.1)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      loop do
        value = yield
        return value if value || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep interval
      end
    end

    # Log lines of one event in a log text.
    def events(text, event)
      text.each_line.select { |l| l.include?("event=#{event} ") }
    end
  end

  RSpec.configure do |c|
    c.include ServerHelpers
    c.after(:suite) { TestServers.stop_all }
  end
end
