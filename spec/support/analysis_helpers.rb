# frozen_string_literal: true

require "objspace"
require "open3"
require "rbconfig"

# Helpers for the analysis and CLI specs: real ObjectSpace.dump_all dumps and
# the CLI run as its own process.
module AnalysisHelpers
  ROOT = File.expand_path("../..", __dir__)
  EXE = File.join(ROOT, "exe", "rack-objectspace")

  # Write a full heap dump (allocation tracing on) to path; gzip it when the
  # name ends in .gz. Objects the block returns are kept alive through the dump.
  # @return [Object] what the block returned
  def write_dump(path)
    ObjectSpace.trace_object_allocations_start
    kept = block_given? ? yield : nil
    GC.start
    plain = path.delete_suffix(".gz")
    plain += ".plain" if plain == path.delete_suffix(".gz") && path.end_with?(".gz")
    File.open(plain, "w") { |f| ObjectSpace.dump_all(output: f) }
    if path.end_with?(".gz")
      Zlib::GzipWriter.open(path, Zlib::BEST_SPEED) { |gz| File.open(plain) { |f| IO.copy_stream(f, gz) } }
      File.delete(plain)
    end
    kept
  ensure
    ObjectSpace.trace_object_allocations_stop
  end

  # "file:line" of the line holding marker in file.
  def line_of(file, marker)
    "#{file}:#{File.readlines(file).index { |l| l.include?(marker) } + 1}"
  end

  # Run exe/rack-objectspace; returns [stdout, stderr, exit status].
  def cli(*args, chdir: ROOT)
    out, err, status = Open3.capture3(RbConfig.ruby, EXE, *args.map(&:to_s), chdir: chdir)
    [out, err, status.exitstatus]
  end

  # Headless Chromium, if installed (apt-get install -y chromium).
  def chromium
    %w[chromium chromium-browser google-chrome].map { |b| which(b) }.compact.first
  end

  def which(bin)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |d| File.join(d, bin) }.find { |p| File.executable?(p) }
  end

  # Screenshot an HTML file with headless Chromium, offline; returns the PNG path.
  def screenshot(html, png, width: 1200, height: 1600)
    profile = Dir.mktmpdir("chromium-profile")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=#{profile}",
           "--screenshot=#{png}", "--window-size=#{width},#{height}", "file://#{html}"]
    _out, err, status = Open3.capture3(*cmd)
    raise "chromium failed: #{err}" unless status.success? && File.exist?(png)

    png
  ensure
    FileUtils.rm_rf(profile) if profile
  end

  # Width, height of a PNG file.
  def png_size(path)
    File.binread(path, 24)[16, 8].unpack("NN")
  end
end

RSpec.configure { |c| c.include AnalysisHelpers }

# Each example gets its own temporary folder, @dir, with path(name) inside it.
RSpec.shared_context "a temporary folder" do
  around do |example|
    Dir.mktmpdir("analysis") do |dir|
      @dir = dir
      example.run
    end
  end

  def path(name)
    File.join(@dir, name)
  end
end
