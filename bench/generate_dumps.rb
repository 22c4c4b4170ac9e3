# frozen_string_literal: true

# Writes three full heap dumps (plain dump_all JSON lines) of a heap of about
# OBJECTS live objects, with allocation tracing on, for bench/analysis.rb:
#   before.json    the baseline heap
#   after.json     after a "request" that leaks LEAK objects at LEAK_LINE and
#                  makes garbage and a replaced cache
#   retained.json  after more requests: the leak is still there
# Usage: ruby bench/generate_dumps.rb DIR OBJECTS
require "objspace"
require "fileutils"

dir = ARGV.fetch(0)
objects = Integer(ARGV.fetch(1, "1200000"))
FileUtils.mkdir_p(dir)

ObjectSpace.trace_object_allocations_start

Record = Struct.new(:id, :name, :tags)

# The baseline: strings, arrays, hashes and structs from a few sites.
BASE = []
(objects / 4).times do |i|
  BASE << Record.new(i, "name-#{i}", ["t#{i % 7}"]) # 1 struct + 2 strings + 1 array + 1 string
end

LEAK = []
def leak(n)
  n.times { |i| LEAK << "leaked string #{i}" * 2 } # LEAK_LINE
end

CACHE = {}
def churn(n, gen)
  CACHE.clear
  n.times { |i| CACHE["k#{i}"] = [gen, i] }
  Array.new(n) { |i| "garbage #{i}" }
  nil
end

def dump(path)
  GC.start
  File.open(path, "w") { |f| ObjectSpace.dump_all(output: f) }
end

leak_count = [objects / 40, 50].max
dump(File.join(dir, "before.json"))
leak(leak_count)
churn(objects / 100, 1)
dump(File.join(dir, "after.json"))
churn(objects / 100, 2)
dump(File.join(dir, "retained.json"))
puts "LEAK_LINE=#{__FILE__}:#{File.readlines(__FILE__).index { |l| l.include?('# LEAK_LINE') } + 1}"
