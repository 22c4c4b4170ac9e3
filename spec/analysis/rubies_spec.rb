# frozen_string_literal: true

require "rack/objectspace/analysis"

# Real dumps of CRuby 3.2, 3.3, 3.4 and 4.0 (the WASI builds), made by
# spec/fixtures/rubies/make_dumps.mjs from spec/fixtures/rubies/leaky_app.rb:
# five requests, a full dump after each. Each version's folder is laid out as
# the middleware writes a store, so `leaks` reads it as one process.
RSpec.describe "Dumps of Ruby 3.2 to 4.0" do
  app_source = File.read(File.expand_path("../fixtures/rubies/leaky_app.rb", __dir__))
  fixtures = File.expand_path("../fixtures/rubies/dumps", __dir__)
  versions = %w[3.2.4 3.3.3 3.4.1 4.0.0]

  # The numbers of leaky_app.rb, read from its source (loading it here would
  # start allocation tracing in this process).
  number = ->(name) { Integer(app_source[/^\s*#{name} = (\d+)$/, 1]) }
  site = ->(marker) { "/app/leaky_app.rb:#{app_source.lines.index { |l| l.rstrip.end_with?("# #{marker}") } + 1}" }
  leak_strings = number.call("LEAK_STRINGS")
  leak_matches = number.call("LEAK_MATCHES")
  leak_rationals = number.call("LEAK_RATIONALS")
  cache_size = number.call("CACHE_SIZE")
  garbage = number.call("GARBAGE")
  untraced = Integer(app_source[/^UNTRACED = Array\.new\((\d+)\)/, 1])

  it "has five dumps per version, each with its metadata record, named for its Ruby" do
    versions.each do |version|
      dumps = Dir.glob("ruby-#{version}/ruby-#{version}/1/*.jsonl.gz", base: fixtures).sort
      expect(dumps.size).to eq(5), version
      dumps.each.with_index(1) do |dump, seq|
        expect(File.basename(dump)).to start_with(format("%06d-", seq))
        meta = JSON.parse(File.read(File.join(fixtures, dump.sub(/\.jsonl\.gz\z/, ".meta.json"))))
        expect(meta).to include("host" => "ruby-#{version}", "pid" => 1, "seq" => seq, "dump" => "full")
        expect(meta["ruby"]).to include("version" => version, "platform" => "wasm32-wasi")
        expect(File.size(File.join(fixtures, dump))).to be < 200_000
      end
    end
  end

  versions.each do |version|
    context "Ruby #{version}" do
      dir = File.join(fixtures, "ruby-#{version}")
      dumps = Dir.glob(File.join(dir, "*", "*", "*.jsonl.gz")).sort

      # The records of a dump, parsed by Ruby's JSON: the count the analyser must match.
      let(:records) do
        Zlib::GzipReader.open(dumps.last) { |gz| gz.each_line.map { |l| JSON.parse(l) } }
      end
      let(:objects) { records.select { |r| r["address"] && !%w[ROOT SHAPE].include?(r["type"]) } }
      let(:class_names) do
        records.select { |r| %w[CLASS MODULE].include?(r["type"]) && r["name"] }.to_h { |r| [r["address"], r["name"]] }
      end

      def tally(records, &key)
        records.group_by(&key).transform_values(&:size)
      end

      def groups(report, name)
        report[name].to_h { |g| [g["name"], g["count"]] }
      end

      describe "summary of the last dump" do
        subject(:report) { Rack::Objectspace::Analysis.summary(dumps.last, top: 0) }

        it "counts every object by type and by class as Ruby's JSON parser does" do
          expect(report["objects"]).to eq(objects.size)
          expect(groups(report, "by_type")).to eq(tally(objects) { |r| r["type"] })
          expect(groups(report, "by_class"))
            .to eq(tally(objects) { |r| class_names.fetch(r["class"], "(unnamed class)") })
          expect(report["skipped"]).to eq(records.count { |r| r["type"] == "SHAPE" })
          expect(report["lossy_strings"]).to eq(0)
        end

        it "has the leaked MatchData and Rationals as MATCH and RATIONAL, at their lines" do
          by_site = report["sites"].group_by { |s| [s["location"], s["type"]] }
          match = by_site.fetch([site.call("LEAK_MATCH"), "MATCH"])
          expect(match.map { |s| [s["class"], s["count"]] }).to eq([["MatchData", leak_matches * 5]])
          rational = by_site.fetch([site.call("LEAK_RATIONAL"), "RATIONAL"])
          expect(rational.map { |s| [s["class"], s["count"]] }).to eq([["Rational", leak_rationals * 5]])
          objects_at = by_site.keys.select { |loc, type| loc == site.call("LEAK_RATIONAL") && type != "IMEMO" }
          expect(objects_at.map(&:last)).to eq(["RATIONAL"])
          leaked = objects.count { |r| r["value"]&.match?(/\Aleaked \d+-\d+\z/) }
          expect(leaked).to eq(leak_strings * 5)
          leak = by_site.fetch([site.call("LEAK_STRING"), "STRING"]).sum { |s| s["count"] }
          expect(leak).to eq(objects.count { |r| r["type"] == "STRING" && r["file"] == "/app/leaky_app.rb" && r["line"] == site.call("LEAK_STRING")[/\d+\z/].to_i })
          expect(leak).to be >= leak_strings * 5
          expect(by_site.fetch([site.call("CACHE_STRING"), "STRING"]).sum { |s| s["count"] }).to eq(cache_size)
          expect(by_site[[site.call("GARBAGE_STRING"), "STRING"]].to_a.sum { |s| s["count"] }).to be < garbage / 10
        end

        it "puts the objects allocated before tracing in the no allocation info row, with their memsize" do
          before = objects.select { |r| r["value"]&.match?(/\Auntraced \d+\z/) }
          expect(before.size).to eq(untraced)
          expect(before).to all(satisfy { |r| !r.key?("file") && !r.key?("line") && !r.key?("generation") })
          rows = report["sites"].select { |s| s["location"] == "no allocation info" && s["type"] == "STRING" }
          expect(rows).to all(include("file" => nil, "line" => nil, "gem" => nil))
          untraced_strings = objects.select { |r| r["type"] == "STRING" && !r.key?("file") }
          expect(rows.sum { |s| s["count"] }).to eq(untraced_strings.size).and be >= untraced
          expect(rows.sum { |s| s["memsize"] }).to eq(untraced_strings.sum { |r| r["memsize"] })
        end

        it "names the same gems as on every other version" do
          expect(groups(report, "by_gem").keys).to contain_exactly("app", "matrix", "ruby", "no allocation info")
          report["sites"].each do |s|
            case s["file"]
            when %r{\A/usr/local/lib/ruby/gems/[\d.]+/gems/matrix-[\d.]+/} then expect(s["gem"]).to eq("matrix"), s["file"]
            when %r{\A/usr/local/lib/ruby/[\d.]+/}, /\A<internal:/ then expect(s["gem"]).to eq("ruby"), s["file"]
            end
          end
          expect(report["sites"].map { |s| s["file"] }).to include(%r{/usr/local/lib/ruby/#{version.sub(/\d+\z/, '0')}/shellwords\.rb})
        end
      end

      describe "diff of dumps 2, 3 and 4 (the cache is full from dump 2 on)" do
        subject(:report) { Rack::Objectspace::Analysis.diff(*dumps[1, 3], top: 0) }

        it "ranks the leak first and leaves out the cache and the garbage" do
          expect(report["sites"].first).to include("location" => site.call("LEAK_STRING"), "type" => "STRING",
                                                   "class" => "String", "count" => leak_strings)
          retained = report["sites"].to_h { |s| [[s["location"], s["type"]], s["count"]] }
          expect(retained).to include([site.call("LEAK_MATCH"), "MATCH"] => leak_matches,
                                      [site.call("LEAK_RATIONAL"), "RATIONAL"] => leak_rationals)
          locations = report["sites"].map { |s| s["location"] }
          expect(locations).not_to include(site.call("CACHE_STRING"), site.call("GARBAGE_STRING"))
          expect(locations).to all(start_with("/app/leaky_app.rb:"))
        end
      end

      describe "leaks over the five dumps" do
        subject(:report) { Rack::Objectspace::Analysis.leaks(dir, top: 0) }

        it "reads them as one process, ranks the leak first and does not rank the cache" do
          expect(report["warnings"]).to eq([])
          expect(report["processes"].map { |p| [p["host"], p["pid"], p["dumps"].size] }).to eq([["ruby-#{version}", 1, 5]])
          first = report["sites"].first
          expect(first).to include("location" => site.call("LEAK_STRING"), "type" => "STRING", "class" => "String",
                                   "per_request" => leak_strings.to_f)
          expect(first["allocated_by"]).to eq([{ "method" => "GET", "path" => "/items", "count" => first["count"] }])
          match = report["sites"].find { |s| s["location"] == site.call("LEAK_MATCH") && s["type"] == "MATCH" }
          expect(match["series"]).to eq((1..5).map { |n| leak_matches * n })
          rational = report["sites"].find { |s| s["location"] == site.call("LEAK_RATIONAL") }
          expect(rational).to include("type" => "RATIONAL", "class" => "Rational",
                                      "series" => (1..5).map { |n| leak_rationals * n })
          expect(report["sites"].map { |s| s["location"] }.uniq)
            .to contain_exactly(site.call("LEAK_STRING"), site.call("LEAK_MATCH"), site.call("LEAK_RATIONAL"))
        end
      end
    end
  end

  it "reads Ruby 4.0's object ids (in flags) without needing them: addresses stay unique" do
    dump = Dir.glob(File.join(fixtures, "ruby-4.0.0", "*", "*", "*.jsonl.gz")).max
    records = Zlib::GzipReader.open(dump) { |gz| gz.each_line.map { |l| JSON.parse(l) } }
    with_id = records.select { |r| r.dig("flags", "object_id") }
    expect(with_id).not_to be_empty
    expect(with_id.map { |r| r["flags"]["object_id"] }).to all(be_an(Integer))
    addresses = records.filter_map { |r| r["address"] }
    expect(addresses.uniq.size).to eq(addresses.size)
    summary = Rack::Objectspace::Analysis.summary(dump, top: 0)
    expect(summary["objects"]).to eq(records.count { |r| r["address"] && !%w[ROOT SHAPE].include?(r["type"]) })
  end

  describe "the CLI on all four versions at once" do
    it "reports one process per Ruby, each with its leak" do
      out, err, status = cli("leaks", fixtures, "--format", "json", "--top", "0")
      expect([err, status]).to eq(["", 0])
      report = JSON.parse(out)
      expect(report["processes"].map { |p| p["host"] }).to eq(versions.map { |v| "ruby-#{v}" })
      versions.each do |version|
        top = report["sites"].find { |s| s["host"] == "ruby-#{version}" }
        expect(top).to include("location" => site.call("LEAK_STRING"), "per_request" => leak_strings.to_f), version
      end
    end

    it "summarises a Ruby 4.0 dump as text" do
      out, err, status = cli("summary", Dir.glob(File.join(fixtures, "ruby-4.0.0", "*", "*", "*.jsonl.gz")).max)
      expect([err, status]).to eq(["", 0])
      expect(out).to match(/^\s+\d+\s+\S+ \S+\s+MATCH\s*$/).and match(/^\s+\d+\s+\S+ \S+\s+RATIONAL\s*$/)
    end
  end
end
