# frozen_string_literal: true

# The native glue, directly. Tagged :gc_stress: bin/test runs these again under
# GC.stress to catch objects the glue forgets to keep alive.
RSpec.describe Rack::Objectspace::Native, :gc_stress do
  let(:lines) do
    [
      %({"address":"0x1", "type":"STRING", "bytesize":6, "value":"s3cret", "memsize":40}\n),
      %({"address":"0x2", "type":"ARRAY", "length":0, "file":"app.rb", "line":3, "memsize":40}\n)
    ]
  end

  def write_through(pipeline)
    meta = JSON.generate(request: { path: "/x" })
    stressed do
      io = IO.for_fd(pipeline.write_fd, autoclose: true)
      lines.each { |line| io.write(line) }
      io.close
      pipeline.finish(meta)
    end
  end

  it "streams a dump through redaction and gzip, and returns bytes and metadata" do
    dump = write_through(stressed { described_class::Pipeline.new(redact: true, gzip_level: 1, sites: false, since: nil) })
    meta = JSON.parse(stressed { dump.meta })
    expect(meta).to include("lines" => 2, "objects" => 2, "redacted_values" => 1, "request" => { "path" => "/x" })
    expect(meta["types"]).to eq("STRING" => { "count" => 1, "memsize" => 40 }, "ARRAY" => { "count" => 1, "memsize" => 40 })
    bytes = stressed { dump.take_bytes }
    expect(bytes.encoding).to eq(Encoding::BINARY)
    expect(gunzip(bytes)).to eq(lines[0].sub(%(, "value":"s3cret"), "") + lines[1])
    expect { dump.take_bytes }.to raise_error(Rack::Objectspace::Error, /already taken/)
  end

  it "refuses a second write_fd and a second finish" do
    pipeline = described_class::Pipeline.new(redact: false, gzip_level: 1, sites: false, since: nil)
    write_through(pipeline)
    expect { pipeline.write_fd }.to raise_error(Rack::Objectspace::Error, /finished/)
    expect { pipeline.finish("{}") }.to raise_error(Rack::Objectspace::Error, /finished/)
  end

  it "takes its arguments as keywords, all of them, and names a missing or unknown one" do
    options = { redact: true, gzip_level: 1, sites: false, since: nil }
    expect { described_class::Pipeline.new(true, 1, false, nil) }.to raise_error(ArgumentError)
    expect { described_class::Pipeline.new(**options.except(:redact)) }.to raise_error(ArgumentError, /missing keyword: :redact/)
    expect { described_class::Pipeline.new(**options, level: 1) }.to raise_error(ArgumentError, /unknown keyword: :level/)
    expect { described_class::Pipeline.streaming(**options, url: "memory://x", key: "k.jsonl.gz") }
      .to raise_error(ArgumentError, /missing keyword: :meta_key/)
  end

  it "rejects a bad gzip level and bad metadata" do
    expect { described_class::Pipeline.new(redact: true, gzip_level: 10, sites: false, since: nil) }
      .to raise_error(ArgumentError, /gzip level must be 0..9, got 10/)
    pipeline = described_class::Pipeline.new(redact: true, gzip_level: 1, sites: false, since: nil)
    IO.for_fd(pipeline.write_fd, autoclose: true).close
    expect { pipeline.finish("not json") }.to raise_error(Rack::Objectspace::Error, /metadata is not JSON/)
  end

  it "writes through the bounded writer and counts what it stored" do
    Dir.mktmpdir do |dir|
      writer = stressed { described_class::Writer.new("file://#{dir}", 2) }
      dump = write_through(described_class::Pipeline.new(redact: true, gzip_level: 1, sites: false, since: nil))
      submitted = stressed { writer.submit("h/1/a.jsonl.gz", "h/1/a.meta.json", dump) }
      expect(submitted).to be(true)
      expect(stressed { writer.flush(10) }).to be(true)
      expect(stressed { writer.stats }).to eq(submitted: 1, stored: 1, failed: 0, dropped: 0, pending: 0)
      expect(records(File.binread("#{dir}/h/1/a.jsonl.gz")).map { |r| r["address"] }).to eq(%w[0x1 0x2])
      expect(JSON.parse(File.read("#{dir}/h/1/a.meta.json"))["lines"]).to eq(2)
      expect(writer.errors).to eq([])
    end
  end

  it "makes sanitised keys" do
    keys = stressed { described_class.dump_keys("web 1", 42, 3, 1_700_000_000_000, "get", "/a/../b?token=x", 255) }
    expect(keys).to eq(["web_1/42/000003-1700000000000-GET-a_b-000000ff.jsonl.gz",
                        "web_1/42/000003-1700000000000-GET-a_b-000000ff.meta.json"])
  end

  it "knows its pid in fork children, and spawned commands do not change it" do
    expect(described_class.pid).to eq(Process.pid)
    system("true")
    Process.wait(spawn("true"))
    expect(described_class.pid).to eq(Process.pid)
    reader, writer = IO.pipe
    child = fork do
      writer.puts([described_class.pid, Process.pid].join(" "))
      exit!(0)
    end
    writer.close
    Process.wait(child)
    expect(reader.read.split.map(&:to_i)).to eq([child, child])
    expect(described_class.pid).to eq(Process.pid)
  end

  it "checks store URLs" do
    expect(described_class.check_store("memory://x")).to be(false)
    Dir.mktmpdir { |dir| expect(described_class.check_store("file://#{dir}/new")).to be(true) }
    expect { stressed { described_class.check_store("nope://x") } }.to raise_error(ArgumentError, /invalid store URL "nope:\/\/x"/)
  end
end
