# frozen_string_literal: true

require "rack/objectspace/analysis"

RSpec.describe Rack::Objectspace::Analysis do
  include_context "a temporary folder"

  describe ".summary" do
    it "counts a real dump by site, type, class and gem, with untraced objects in their own row" do
      kept = write_dump(path("heap.jsonl")) do
        Array.new(3000) { |i| "summary spec string #{i}" } # SUMMARY_SITE
      end
      expect(kept.size).to eq(3000)
      report = described_class.summary(path("heap.jsonl"), top: 0)

      site = report["sites"].find { |s| s["location"] == line_of(__FILE__, "# SUMMARY_SITE") && s["type"] == "STRING" }
      expect(site).to include("file" => __FILE__, "class" => "String", "gem" => "app")
      expect(site["count"]).to be >= 3000
      expect(site["memsize"]).to be >= 3000 * 40
      array = report["sites"].find { |s| s["location"] == line_of(__FILE__, "# SUMMARY_SITE") && s["type"] == "ARRAY" }
      expect(array).to include("class" => "Array", "count" => 1)

      untraced = report["sites"].select { |s| s["location"] == "no allocation info" }
      expect(untraced).not_to be_empty
      expect(untraced.sum { |s| s["memsize"] }).to be > 0
      expect(untraced).to all(include("file" => nil, "line" => nil))

      expect(report["objects"]).to eq(report["by_type"].sum { |g| g["count"] })
      expect(report["by_gem"].map { |g| g["name"] }).to include("app", "ruby", "no allocation info")
      expect(report["by_class"].map { |g| g["name"] }).to include("String", "Array", "Hash")
      expect(report["by_location"].first["memsize"]).to be >= report["by_location"].last["memsize"]
    end

    it "reads gzipped dumps the same as plain ones" do
      kept = write_dump(path("a.jsonl.gz")) { Array.new(500) { |i| "gz #{i}" } }
      FileUtils.cp(path("a.jsonl.gz"), path("b.jsonl.gz"))
      plain = Zlib::GzipReader.open(path("a.jsonl.gz"), &:read)
      File.write(path("a.jsonl"), plain)
      expect(described_class.summary(path("a.jsonl"), top: 0)["sites"])
        .to eq(described_class.summary(path("a.jsonl.gz"), top: 0)["sites"])
      expect(kept.size).to eq(500)
    end

    it "reads a named pipe once, as its writer gives it (mkfifo f; zcat dump.gz > f)" do
      # Opening a FIFO, closing it and opening it again (to look at the file
      # first) kills a writer whose write lands in between (SIGPIPE) and cuts
      # the dump short: that lost about one run in four, so 20 runs prove it.
      line = %({"address":"0x1", "type":"STRING", "file":"a.rb", "line":1, "memsize":40})
      results = Array.new(20) do |i|
        fifo = path("f#{i}")
        File.mkfifo(fifo)
        writer = Process.spawn("sh", "-c", %(yes "$0" | head -n 20000 > "$1"), line, fifo)
        reader = Thread.new do
          described_class.summary(fifo, top: 0)["objects"]
        rescue Rack::Objectspace::Error => e
          e.message
        end
        unless reader.join(20)
          # A reader left waiting in open(2) for a writer that is gone: give it one.
          File.open(fifo, File::WRONLY | File::NONBLOCK, &:close)
          reader.join(5)
        end
        [Process.wait2(writer).last.exitstatus, reader.value]
      end
      expect(results).to all(eq([0, 20_000]))
    end

    it "keeps the top N sites, largest memsize first" do
      write_dump(path("heap.jsonl"))
      sites = described_class.summary(path("heap.jsonl"), top: 5)["sites"]
      expect(sites.size).to eq(5)
      expect(sites.map { |s| s["memsize"] }).to eq(sites.map { |s| s["memsize"] }.sort.reverse)
    end
  end

  describe ".diff" do
    it "names the site whose objects were allocated between dumps 1 and 2 and survive to dump 3" do
      retained = []
      write_dump(path("1.jsonl"))
      write_dump(path("2.jsonl.gz")) do
        400.times { |i| retained << "retained #{i}" } # DIFF_LEAK
        temporary = Array.new(300) { |i| "temporary #{i}" } # DIFF_TEMP
        temporary.clear # the strings are garbage (the emptied Array may linger on the C stack)
        nil
      end
      write_dump(path("3.jsonl")) { retained.size }
      report = described_class.diff(path("1.jsonl"), path("2.jsonl.gz"), path("3.jsonl"))
      top = report["sites"].first
      expect(top).to include("location" => line_of(__FILE__, "# DIFF_LEAK"), "type" => "STRING", "class" => "String")
      expect(top["count"]).to eq(400)
      temporaries = report["sites"].select { |s| s["location"] == line_of(__FILE__, "# DIFF_TEMP") && s["type"] == "STRING" }
      expect(temporaries).to be_empty
      expect(report["inputs"]).to eq([path("1.jsonl"), path("2.jsonl.gz"), path("3.jsonl")])
    end
  end

  describe "unreadable input" do
    before do
      write_dump(path("good.jsonl"))
      @lines = File.readlines(path("good.jsonl"))
    end

    it "names the file and line of a record cut in half" do
      File.write(path("cut.jsonl"), @lines.first(100).join + @lines[100][0, 40])
      expect { described_class.summary(path("cut.jsonl")) }
        .to raise_error(Rack::Objectspace::ParseError, /\A#{Regexp.escape(path('cut.jsonl'))}: line 101: record cut short/)
    end

    it "names the file and line of malformed JSON" do
      @lines[9] = "{\"address\": oops}\n"
      File.write(path("bad.jsonl"), @lines.join)
      expect { described_class.summary(path("bad.jsonl")) }
        .to raise_error(Rack::Objectspace::ParseError, /bad\.jsonl: line 10: malformed JSON/)
    end

    it "says a gzip stream is truncated" do
      gz = Zlib.gzip(@lines.join)
      File.binwrite(path("t.jsonl.gz"), gz[0, gz.bytesize / 2])
      expect { described_class.summary(path("t.jsonl.gz")) }
        .to raise_error(Rack::Objectspace::ParseError, /t\.jsonl\.gz: gzip stream truncated after line \d+/)
    end

    it "rejects binary junk with the line number" do
      File.binwrite(path("junk"), "\x00\xFF\xFE garbage\n".b)
      expect { described_class.summary(path("junk")) }
        .to raise_error(Rack::Objectspace::ParseError, /junk: line 1: /)
    end
  end
end

RSpec.describe Rack::Objectspace::Analysis, "under GC.stress", :gc_stress do
  it "keeps its arguments and results alive across the native calls" do
    Dir.mktmpdir("stress") do |dir|
      dump = File.join(dir, "tiny.jsonl")
      File.write(dump, <<~JSONL)
        {"address":"0x10", "type":"CLASS", "class":"0x1", "name":"String", "memsize":500}
        {"address":"0x20", "type":"STRING", "class":"0x10", "bytesize":3, "file":"/app/a.rb", "line":3, "generation":5, "memsize":40}
        {"address":"0x30", "type":"STRING", "class":"0x10", "bytesize":3, "memsize":40}
      JSONL
      report = stressed { described_class.summary(dump, top: 0) }
      expect(report["sites"].map { |s| [s["location"], s["class"], s["count"]] })
        .to contain_exactly(["/app/a.rb:3", "String", 1], ["no allocation info", "String", 1], ["no allocation info", nil, 1])
      report = stressed { described_class.diff(dump, dump, dump) }
      expect(report["sites"]).to eq([])
    end
  end
end
