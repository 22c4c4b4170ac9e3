# frozen_string_literal: true

RSpec.describe "exe/rack-objectspace" do
  include_context "a temporary folder"

  def no_backtrace(err)
    expect(err).not_to match(/\.rb:\d+:in `/)
    expect(err).not_to include("panicked")
  end

  let(:dump) do
    write_dump(path("heap.jsonl.gz")) { Array.new(200) { |i| "cli #{i}" } } # CLI_SITE
    path("heap.jsonl.gz")
  end

  it "prints a summary as a text table" do
    out, err, status = cli("summary", dump, "--top", "3")
    expect(status).to eq(0), err
    expect(out).to start_with("#{dump}: ")
    expect(out).to include("Top allocation sites by memsize", "By type", "By gem")
  end

  it "prints stable JSON with a sites array" do
    out, err, status = cli("summary", dump, "--format", "json", "--top", "0")
    expect(status).to eq(0), err
    report = JSON.parse(out)
    expect(report["sites"]).to all(include("file", "line", "count", "memsize", "type", "class", "location", "gem"))
    site = report["sites"].find { |s| s["location"] == line_of(__FILE__, "# CLI_SITE") && s["type"] == "STRING" }
    expect(site["count"]).to be >= 200
  end

  it "writes --output to a file" do
    _out, err, status = cli("summary", dump, "--format", "json", "--output", path("r.json"))
    expect(status).to eq(0), err
    expect(JSON.parse(File.read(path("r.json")))["command"]).to eq("summary")
  end

  it "exits 2 on usage errors, with a message and no backtrace" do
    [[], ["frobnicate", "x"], ["diff", "a", "b"], ["summary", dump, "--format", "pdf"],
     ["summary", dump, "--top", "-1"], ["summary", dump, "--bogus"], ["leaks", "ftp://x/y"]].each do |args|
      _out, err, status = cli(*args)
      expect(status).to eq(2), "#{args.inspect}: #{err}"
      expect(err).to start_with("rack-objectspace: ")
      no_backtrace(err)
    end
  end

  it "prints help and exits 0" do
    out, _err, status = cli("--help")
    expect(status).to eq(0)
    expect(out).to include("leaks SOURCE", "diff A B C", "summary FILE", "ls SOURCE", "--format", "--top", "--output")
  end

  it "exits 1 with the file and line for unreadable dumps, never a backtrace" do
    lines = Zlib::GzipReader.open(dump, &:readlines)
    File.write(path("cut.jsonl"), lines.first(50).join + lines[50][0, 30])
    gz = Zlib.gzip(lines.join)
    File.binwrite(path("trunc.jsonl.gz"), gz[0, gz.bytesize / 3])
    File.binwrite(path("junk.bin"), Random.new(1).bytes(4096))
    File.write(path("bad.jsonl"), lines.first(5).join + "{\"address\":\"0x1\", \"type\" \"STRING\"}\n")
    {
      "cut.jsonl" => /cut\.jsonl: line 51: record cut short/,
      "trunc.jsonl.gz" => /trunc\.jsonl\.gz: gzip stream truncated after line \d+/,
      "junk.bin" => /junk\.bin: line 1: /,
      "bad.jsonl" => /bad\.jsonl: line 6: malformed JSON/,
      "missing.jsonl" => /missing\.jsonl: no such file/
    }.each do |name, message|
      out, err, status = cli("summary", path(name))
      expect(status).to eq(1), "#{name}: #{err}"
      expect(err).to match(message)
      expect(out).to eq("")
      no_backtrace(err)
    end
  end

  it "diffs three dumps and lists and analyses a session" do
    retained = []
    write_dump(path("1.jsonl"))
    write_dump(path("2.jsonl")) { 300.times { |i| retained << "kept #{i}" } } # CLI_DIFF
    write_dump(path("3.jsonl")) { retained }
    out, err, status = cli("diff", path("1.jsonl"), path("2.jsonl"), path("3.jsonl"), "--format", "json")
    expect(status).to eq(0), err
    expect(JSON.parse(out)["sites"].first).to include("location" => line_of(__FILE__, "# CLI_DIFF"), "count" => 300)

    out, err, status = cli("ls", @dir, "--format", "json")
    expect(status).to eq(0), err
    expect(JSON.parse(out)["dumps"].map { |d| File.basename(d["key"]) }).to eq(%w[1.jsonl 2.jsonl 3.jsonl])
  end
end
