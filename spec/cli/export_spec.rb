# frozen_string_literal: true

require "json"
require "open3"
require "rack/objectspace/analysis/export"
require_relative "../fixtures/census_app"

# `rack-objectspace export SOURCE OUTDIR`: the census of every process as
# Parquet by host, per-dump summaries, and docs/fleet.md's DuckDB query over them.
RSpec.describe "rack-objectspace export" do
  include_context "a temporary folder"

  root = File.expand_path("../..", __dir__)
  fleet = File.read(File.join(root, "docs", "fleet.md"))
  # The documented query, exactly: the DuckDB view over the files, then the query.
  query = fleet[/<!-- export-query:begin -->\s*```sql\n(.*?)```\s*<!-- export-query:end -->/m, 1]

  # Runs SQL statements (separated by ";\n") with the duckdb Python module; the
  # last statement's rows as arrays.
  def duckdb(sql, chdir:)
    script = <<~PY
      import duckdb, json, sys
      con = duckdb.connect()
      statements = [s for s in sys.stdin.read().split(";\\n") if s.strip()]
      for s in statements[:-1]:
          con.execute(s)
      print(json.dumps(con.execute(statements[-1]).fetchall(), default=str))
    PY
    out, err, status = Open3.capture3("python3", "-c", script, stdin_data: sql, chdir: chdir)
    raise "duckdb (pip install duckdb; bin/setup does): #{err}" unless status.success?

    JSON.parse(out)
  end

  def no_backtrace(err)
    expect(err).not_to match(/\.rb:\d+:in `/)
    expect(err).not_to include("panicked")
  end

  before(:all) do
    raise "#{Rack::Objectspace::Analysis::Export::NAME} is not built: run `ruby -S rake compile:export` (bin/setup does)" \
      unless Rack::Objectspace::Analysis::Export.binary
  end

  describe "a session of two processes of a leaky app" do
    # Two fresh processes serve 300 requests each: one with the default options
    # (the census and a few dumps), one with the census alone (every: nil).
    before(:all) do
      @session = Dir.mktmpdir("export-session")
      app = File.join(root, "spec/fixtures/census_app.rb")
      threads = ['{}', '{"every":null}'].map do |options|
        Thread.new { Open3.capture3(RbConfig.ruby, app, "#{@session}/store", options, "300", chdir: root) }
      end
      threads.map(&:value).each { |_out, err, status| raise err unless status.success? }
      @out = "#{@session}/out"
      @export = Open3.capture3(RbConfig.ruby, AnalysisHelpers::EXE, "export", "#{@session}/store", @out, chdir: root)
    end
    after(:all) { FileUtils.rm_rf(@session) }

    it "writes the census by host and the dumps' summaries, and says what it wrote" do
      out, err, status = @export
      expect(status.exitstatus).to eq(0), err
      host = Dir.children("#{@session}/store").first
      expect(Dir.glob("census/*/*.parquet", base: @out)).to eq(["census/host=#{host}/part-00000.parquet"])
      expect(Dir.glob("dumps/*/*.parquet", base: @out)).to eq(["dumps/host=#{host}/part-00000.parquet"])
      expect(out).to match(/census: \d+ rows from 2 process\(es\) on 1 host\(s\)/)
      expect(out).to match(/dumps: +\d+ rows from [1-9]\d* dump\(s\)/)
    end

    it "has the documented schema, a row per (point, site), each process's census to its last request" do
      schema = duckdb("DESCRIBE SELECT * FROM read_parquet('out/census/**/*.parquet', hive_partitioning = true)",
                      chdir: @session).to_h { |r| [r[0], r[1]] }
      expect(schema).to eq(
        "host" => "VARCHAR", "pid" => "BIGINT", "at" => "TIMESTAMP WITH TIME ZONE", "requests" => "BIGINT",
        "gc_count" => "BIGINT", "file" => "VARCHAR", "line" => "INTEGER", "type" => "VARCHAR", "class" => "VARCHAR",
        "gem" => "VARCHAR", "count" => "BIGINT", "memsize" => "BIGINT"
      )
      rows = duckdb(<<~SQL, chdir: @session)
        SELECT pid, MAX(requests), COUNT(*), COUNT(DISTINCT gem), MIN("at") > TIMESTAMP '2020-01-01',
               COUNT(*) FILTER (WHERE gem = 'app' AND file LIKE '%census_app.rb' AND type = 'STRING')
        FROM read_parquet('out/census/**/*.parquet', hive_partitioning = true) GROUP BY pid
      SQL
      expect(rows.size).to eq(2)
      rows.each do |_pid, last, count, gems, recent, app_rows|
        expect(last).to eq(300)
        expect(count).to be > 100
        expect(gems).to be >= 2 # app and rack-objectspace at least
        expect(recent).to be(true)
        expect(app_rows).to be > 10
      end
    end

    it "ranks with the documented query the same top site as leaks" do
      expect(query).not_to be_nil, "docs/fleet.md lost its <!-- export-query:begin --> block"
      leaks, err, status = cli("leaks", "#{@session}/store", "--format", "json")
      expect(status).to eq(0), err
      top = JSON.parse(leaks)["sites"].first
      rows = duckdb(query, chdir: @session)
      expect(rows).not_to be_empty
      file, line, type, _class, per_request, processes = rows.first
      expect([file, line, type]).to eq([top["file"], top["line"], top["type"]])
      expect(file).to end_with("spec/fixtures/census_app.rb")
      expect(processes).to eq(2)
      # Both processes leak ~1/3 object a request: the sum is about 2/3.
      expect(per_request).to be_within(0.15).of(2.0 / 3)
      # The bounded cache (filled early, then flat) is not ranked.
      cache_line = File.readlines(File.join(root, "spec/fixtures/census_app.rb"))
                       .index { |l| l.include?("CACHE[key] = ") } + 1
      expect(rows.map { |r| r[1] }).not_to include(cache_line)
    end

    it "gives the same rows with the documented query, unchanged, on Spark SQL (local mode)", :slow do
      # Spark reads the files its own way (the docs' one engine-specific
      # part); the query after DuckDB's CREATE VIEW runs as written.
      spark_query = query.split(";\n").reject { |s| s.strip.empty? }.last
      script = <<~PY
        import json, sys
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.sql.shuffle.partitions", "4").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        spark.read.parquet("out/census").createOrReplaceTempView("census")
        print(json.dumps([list(r) for r in spark.sql(sys.stdin.read()).collect()]))
      PY
      out, err, status = Open3.capture3("python3", "-c", script, stdin_data: spark_query, chdir: @session)
      expect(status).to be_success, "pyspark (pip install pyspark, and a Java runtime; bin/setup does): #{err}"
      spark = JSON.parse(out.lines.last)
      duck = duckdb(query, chdir: @session)
      expect(spark.size).to eq(duck.size)
      expect(spark.size).to be > 0
      spark.zip(duck).each do |s, d|
        expect(s.values_at(0, 1, 2, 3, 5, 6, 7)).to eq(d.values_at(0, 1, 2, 3, 5, 6, 7))
        expect(s[4]).to be_within(1e-9).of(d[4]) # regr_slope: float sums in another order
      end
    end

    it "summarises each dump by site, as summary does" do
      ls, err, status = cli("ls", "#{@session}/store", "--format", "json")
      expect(status).to eq(0), err
      key = JSON.parse(ls)["dumps"].last["key"]
      summary = JSON.parse(cli("summary", "#{@session}/store", key, "--format", "json", "--top", "0").first)
      rows = duckdb(<<~SQL, chdir: @session)
        SELECT COUNT(*), SUM(count), SUM(memsize), MIN(requests), MIN(seq)
        FROM read_parquet('out/dumps/**/*.parquet', hive_partitioning = true) WHERE key = '#{key}'
      SQL
      sites, count, memsize, requests, seq = rows.first
      expect(sites).to eq(summary["sites"].size)
      expect(count).to eq(summary["sites"].sum { |s| s["count"] })
      expect(memsize).to eq(summary["sites"].sum { |s| s["memsize"] })
      expect(requests).to be_between(1, 300)
      expect(seq).to eq(key[%r{/(\d+)-}, 1].to_i)
    end

    it "refuses an OUTDIR that already holds an export (exit 2), rather than mixing two" do
      _out, err, status = cli("export", "#{@session}/store", @out)
      expect(status).to eq(2)
      expect(err).to include("#{@out}/census already exists and is not empty")
      no_backtrace(err)
    end
  end

  # `export` takes any SOURCE `leaks` takes: a redis:// URL too (the README's
  # `Moneta.new(:Redis, url:)` store), read through Moneta as `leaks` reads it.
  describe "a census stored in Moneta over a real redis-server" do
    before(:all) do
      @redis = TestServers.redis(name: "redis-export")
      @url = "redis://127.0.0.1:#{@redis.port}/0"
    rescue TestServers::Missing => e
      skip_outside_ci(e.message)
    end
    after(:all) { @redis&.stop }

    it "is exported from its redis:// URL, and the documented query finds the leak in it" do
      app = File.join(root, "spec/fixtures/census_app.rb")
      _out, err, status = Open3.capture3(RbConfig.ruby, app, @url, '{"every":null}', "200", chdir: root)
      raise err unless status.success?

      out, err, status = cli("export", @url, path("out"))
      expect(status).to eq(0), err
      expect(out).to match(/census: \d+ rows from 1 process\(es\) on 1 host\(s\)/)
      expect(Dir.glob("census/*/*.parquet", base: path("out")).size).to eq(1)
      file, line, = duckdb(query, chdir: path(".")).first
      expect([file, line]).to eq([app, CensusApp::LEAK_LINE])

      _out, err, status = cli("export", "redis://127.0.0.1:#{TestServers.free_port}/0", path("out2"))
      expect(status).to eq(1)
      expect(err).to match(/\Arack-objectspace: .*(CannotConnect|ECONNREFUSED|connect)/i)
      no_backtrace(err)
    end
  end

  describe "bad input" do
    # A real batch: one process, census only.
    let(:batch) do
      app = File.join(root, "spec/fixtures/census_app.rb")
      _out, err, status = Open3.capture3(RbConfig.ruby, app, path("real"), '{"every":null}', "40", chdir: root)
      raise err unless status.success?

      File.binread(Dir.glob("#{path('real')}/**/census-000001.ndjson.gz").first)
    end

    def store_with(bytes)
      FileUtils.mkdir_p(path("store/web-1/42"))
      File.binwrite(path("store/web-1/42/census-000001.ndjson.gz"), bytes)
      path("store")
    end

    it "names the batch and the line of a record cut short, exits 1, never a backtrace" do
      lines = Zlib.gunzip(batch).lines
      expect(lines.size).to be > 10
      source = store_with(Zlib.gzip(lines.first(8).join + lines[8][0, 25]))
      _out, err, status = cli("export", source, path("out"))
      expect(status).to eq(1)
      expect(err).to include("census-000001.ndjson.gz: line 9: record cut short at byte 25 of the line")
      no_backtrace(err)
    end

    it "names the last whole line of a truncated gzip stream" do
      source = store_with(batch[0, batch.bytesize / 2])
      _out, err, status = cli("export", source, path("out"))
      expect(status).to eq(1)
      expect(err).to match(/census-000001\.ndjson\.gz: gzip stream truncated after line \d+; the batch was cut short/)
      no_backtrace(err)
    end

    it "says what is wrong with a record that is not one" do
      header = '{"census":1,"host":"web-1","pid":42,"seq":1,"points":1,"sites":0}'
      point = '{"requests":1,"gc_count":1,"swept_gc":1,"at":1,"counts":[[3,1,40]]}'
      source = store_with(Zlib.gzip("#{header}\n#{point}\n"))
      _out, err, status = cli("export", source, path("out"))
      expect(status).to eq(1)
      expect(err).to include("line 2: site 3 is not named in this batch")
    end

    it "reads a field of the wrong type as an error naming the batch and the line, in export and leaks" do
      lines = Zlib.gunzip(batch).lines
      i = lines.index { |l| l.start_with?('{"requests":') }
      lines[i] = lines[i].sub(/"swept_gc":(\d+)/, '"swept_gc":"\1"')
      source = store_with(Zlib.gzip(lines.join))
      said = "census-000001.ndjson.gz: line #{i + 1}: malformed point record: invalid type: string"
      _out, err, status = cli("export", source, path("out"))
      expect(status).to eq(1)
      expect(err).to include(said)
      no_backtrace(err)
      # leaks leaves the batch out, as a missing one, and says why.
      out, err, status = cli("leaks", source)
      expect(status).to eq(0)
      expect(out + err).to include("skipped census web-1/42/#{said}")
      no_backtrace(err)
    end

    it "exits 1 for a missing folder and 2 for a usage error" do
      _out, err, status = cli("export", path("nope"), path("out"))
      expect([status, err]).to match([1, /nope: no such folder/])
      _out, err, status = cli("export", path("nope"))
      expect([status, err]).to match([2, /export takes 2 arguments/])
    end

    # A checkout without the binary (its Ruby files, this Ruby's extension, Rakefile
    # and rakelib/): the command named is the rake task, run from the checkout
    # (spec/gem_spec.rb checks the installed gem's). Running it dry proves the task is there.
    it "says how to build the binary when it is missing, with a command that works in a checkout" do
      checkout = path("checkout")
      extension = "lib/rack/objectspace/#{RUBY_VERSION[/\A\d+\.\d+/]}/*"
      Dir.glob(["lib/**/*.rb", extension, "exe/*", "Rakefile", "rakelib/*"], base: root).each do |f|
        from = File.join(root, f)
        to = File.join(checkout, f)
        FileUtils.mkdir_p(File.dirname(to))
        # The scripts are copied (a symlinked script's __dir__ is the original's); the .so is linked.
        File.extname(f) == ".#{RbConfig::CONFIG['DLEXT']}" ? FileUtils.ln_s(from, to) : FileUtils.cp(from, to)
      end
      out, err, status = Open3.capture3({ "RACK_OBJECTSPACE_EXPORT" => nil }, RbConfig.ruby,
                                        File.join(checkout, "exe/rack-objectspace"), "export", path("x"), path("y"))
      expect(out).to eq("")
      expect(status.exitstatus).to eq(1)
      expect(err).to include("export needs rack-objectspace-export, which is not built")
      command = err[/To fix this, run `(.*)`\./, 1]
      expect(command).to eq("cd #{checkout} && #{RbConfig.ruby} -S rake compile:export")
      dry, status = Open3.capture2e(command.sub(" rake ", " rake --dry-run "))
      expect(status).to be_success, dry
      expect(dry).to include("Execute (dry run) compile:export")
    end

    it "says what is wrong with a RACK_OBJECTSPACE_EXPORT that is not a program" do
      out, err, status = Open3.capture3({ "RACK_OBJECTSPACE_EXPORT" => path("none") }, RbConfig.ruby,
                                        AnalysisHelpers::EXE, "export", path("x"), path("y"))
      expect(out).to eq("")
      expect(status.exitstatus).to eq(1)
      expect(err).to include("RACK_OBJECTSPACE_EXPORT=#{path('none')} is not a program",
                             "unset it to run the one the gem builds")
    end
  end
end
