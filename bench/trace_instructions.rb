# frozen_string_literal: true

# What tracing and the census cost per allocation, in instructions executed
# (valgrind's callgrind): unlike time, a busy shared machine does not blur it.
# bench/trace.rb's request-like work runs ITERATIONS times on a 200k-string heap
# with no tracing, the native tracer, the tracer plus the census, and the
# sampled census (one request in SAMPLE_RATE, default the option's: there each
# iteration is a census request, with its point); each mode is run again with 0
# iterations, and the difference is divided by the allocations made.
#
#   ruby bench/trace_instructions.rb                      # 20,000 iterations (~4 min)
#   ITERATIONS=5000 ruby bench/trace_instructions.rb
#   CI=1 ruby bench/trace_instructions.rb                 # smoke size (200 iterations)
#   LIB=/other/checkout/lib ruby bench/trace_instructions.rb   # another build
require "open3"

if ARGV.first == "--child"
  _, mode, iterations = ARGV
  $LOAD_PATH.unshift ENV.fetch("LIB", File.expand_path("../lib", __dir__))
  require "rack/objectspace"
  require_relative "request_work"
  keep = keep_heap
  native = Rack::Objectspace::Native
  native::Census.enable if %w[census sampled].include?(mode)
  native::Tracer.sample(Integer(ENV.fetch("SAMPLE_RATE", native::Tracer::DEFAULT_SAMPLE_RATE)), 1) if mode == "sampled"
  native::Tracer.start unless mode == "none"
  GC.start
  allocated = GC.stat(:total_allocated_objects)
  gcs = GC.count
  if mode == "sampled"
    Integer(iterations).times do
      native::Census.request("GET", "/work")
      work
      native::Tracer.end_request
    end
  else
    Integer(iterations).times { work }
  end
  warn "ALLOCATED #{GC.stat(:total_allocated_objects) - allocated} GCS #{GC.count - gcs} KEPT #{keep.size}"
  exit
end

abort "bench/trace_instructions.rb: valgrind is not installed (apt-get install valgrind)" \
  unless system("valgrind --version", out: File::NULL, err: File::NULL)

ITERATIONS = Integer(ENV.fetch("ITERATIONS", ENV["CI"] ? 200 : 20_000))

# [instructions, allocations, GCs] of one run.
def run(mode, iterations)
  _, err, status = Open3.capture3("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                  RbConfig.ruby, __FILE__, "--child", mode, iterations.to_s)
  abort "bench/trace_instructions.rb: #{mode} failed:\n#{err}" unless status.success?
  [Integer(err[/Collected : (\d+)/, 1]), Integer(err[/ALLOCATED (\d+)/, 1]), Integer(err[/GCS (\d+)/, 1])]
end

marginal = %w[none native census sampled].to_h do |mode|
  boot, = run(mode, 0)
  total, allocations, gcs = run(mode, ITERATIONS)
  [mode, [total - boot, allocations, gcs]]
end
allocations = marginal["none"][1]
puts "#{ITERATIONS} iterations of bench/trace.rb's work, #{allocations} allocations, " \
     "GCs: #{marginal.map { |m, (_, _, g)| "#{m} #{g}" }.join(', ')} (#{ENV.fetch('LIB', 'this checkout')})"
per = ->(mode) { marginal[mode][0].fdiv(allocations) }
puts format("instructions per allocation: untraced %.0f; native tracer +%.0f over untraced; " \
            "census +%.0f over the tracer; sampled census (1 request in %s) +%.0f over untraced",
            per.("none"), per.("native") - per.("none"), per.("census") - per.("native"),
            ENV.fetch("SAMPLE_RATE", "the default rate"), per.("sampled") - per.("none"))
