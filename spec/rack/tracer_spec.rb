# frozen_string_literal: true

require "objspace"

# Native::Tracer, the allocation hook behind `trace: true` and `dump: :retained`,
# and the pipeline that joins its table with dump_all. Tagged :gc_stress.
RSpec.describe Rack::Objectspace::Native::Tracer, :gc_stress do
  before { described_class.start }
  after { described_class.stop }

  def address(obj)
    JSON.parse(ObjectSpace.dump(obj))["address"]
  end

  # dump_all through a native pipeline; the records as parsed JSON.
  def dump_through(since)
    pipeline = Rack::Objectspace::Native::Pipeline.new(redact: true, gzip_level: 1, sites: true, since: since)
    io = IO.for_fd(pipeline.write_fd, autoclose: true)
    ObjectSpace.dump_all(output: io)
    io.close
    dump = pipeline.finish("{}")
    [records(dump.take_bytes), JSON.parse(dump.meta)]
  end

  it "records the file, line and GC generation of each allocation" do
    before = GC.count
    line = __LINE__ + 1
    objects = stressed { Array.new(50) { |i| "s#{i}" } }
    sites = objects.map { |o| described_class.site(o) }
    expect(sites.map { |file, l, _| [file, l] }.uniq).to eq([[__FILE__, line]])
    expect(sites.map(&:last)).to all(be_between(before, GC.count))
    expect(described_class.stats).to include(enabled: true)
    expect(described_class.stats[:recorded]).to be >= 50
  end

  # The hook caches each allocating instruction's line (frames.rs); Ruby's own
  # tracing asks the VM every time. Each shape runs three times (the cache
  # misses, then hits) and across a GC and a compaction (entries live one GC).
  it "names the same line as Ruby's own tracing, from C methods, blocks, eval and across GCs" do
    shapes = {
      literal: -> { +"s" },
      c_method: -> { [1, 2].map(&:to_s) },
      block: -> { [3].map { |i| "b#{i}" } },
      nested: -> { [[1]].flat_map { |a| a.map { |i| [i].to_s } } },
      eval: -> { eval("+'e'", binding, "/app/evaluated.rb", 42) }, # rubocop:disable Security/Eval
      define_method: -> { Class.new { define_method(:m) { +"d" } }.new.m },
      interpolation: -> { "x#{rand(9)}y" },
      hash: -> { { a: rand } },
      two_lines: lambda {
        first = +"one"
        [first, +"two"]
      }
    }
    # Ruby's own answers are read as each round ends: objspace 3.1 loses some
    # of its records when GC.compact moves their objects.
    ObjectSpace.trace_object_allocations_start
    kept = []
    objspace = []
    3.times do |round|
      GC.start if round == 1
      GC.compact if round == 2 && GC.respond_to?(:compact)
      made = shapes.flat_map { |name, make| Array(make.call).map { |o| [name, o] } }
      objspace.concat(made.map { |name, o| [name, [ObjectSpace.allocation_sourcefile(o), ObjectSpace.allocation_sourceline(o)]] })
      kept.concat(made)
    end
    ObjectSpace.trace_object_allocations_stop
    GC.compact if GC.respond_to?(:compact) # ours follows every move
    ours = kept.map { |name, o| [name, described_class.site(o)&.first(2)] }
    expect(ours).to eq(objspace)
    expect(ours.map { |_, site| site }).to all(satisfy { |file, line| file && line.positive? })
    expect(described_class.stats).to include(line_cache: true, line_cache_mismatches: 0)
  ensure
    ObjectSpace.trace_object_allocations_clear
  end

  it "knows nothing of immediates, nor of objects from before it started" do
    described_class.stop
    old = +"old"
    described_class.start
    expect(described_class.site(old)).to be_nil
    expect([described_class.site(1), described_class.site(:sym), described_class.site(nil)]).to all(be_nil)
    expect(described_class.site(+"new")).not_to be_nil
  end

  it "follows the objects GC.compact moves: each keeps its site at its new address" do
    skip "GC.compact is not supported here" unless GC.respond_to?(:compact)

    # Garbage first, then the kept objects: compaction moves them down into
    # the garbage's slots.
    junk = Array.new(50_000) { |i| "junk-#{i}" }
    line = __LINE__ + 1
    kept = Array.new(2000) { |i| "kept-#{i}" }
    junk.clear
    GC.start
    before = kept.map { |o| address(o) }
    moved_before = described_class.stats[:moved]
    GC.compact
    moved = kept.each_index.reject { |i| address(kept[i]) == before[i] }
    expect(moved).not_to be_empty # the spec is only worth something if objects moved
    expect(kept.map { |o| described_class.site(o)&.first(2) }.uniq).to eq([[__FILE__, line]])
    expect(described_class.stats[:moved] - moved_before).to be >= moved.size
  end

  it "gives dump_all records the fields objspace's tracing would, without its cost" do
    line = __LINE__ + 1
    kept = Array.new(3)
    records, = dump_through(nil)
    record = records.find { |r| r["address"] == address(kept) }
    expect(record).to include("type" => "ARRAY", "file" => __FILE__, "line" => line)
    expect(record["generation"]).to be <= GC.count
    expect(records.count { |r| r["type"] == "ROOT" }).to be_positive
  end

  it "keeps only objects allocated since the baseline, and names the classes from before it" do
    old = Struct.new(:a).new(1)
    GC.start
    baseline = GC.count
    line = __LINE__ + 1
    kept = Array.new(3)
    records, meta = dump_through(baseline)
    expect(records.find { |r| r["address"] == address(kept) }).to include("file" => __FILE__, "line" => line)
    expect(records.map { |r| r["address"] }).not_to include(address(old))
    expect(records.none? { |r| r["type"] == "ROOT" }).to be(true)
    objects = records.reject { |r| r["before_baseline"] }
    expect(objects.map { |r| r["generation"] }).to all(be >= baseline)
    array = records.find { |r| r["name"] == "Array" }
    expect(array).to eq("address" => address(Array), "type" => "CLASS", "name" => "Array", "before_baseline" => true)
    expect(meta["left_out"]).to be > 1000
    expect(meta["lines"]).to eq(objects.size)
  end
end
