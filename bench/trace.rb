# frozen_string_literal: true

# Allocation tracing cost: the same request-like work (build 20 rows, JSON them,
# a few strings and arrays) run with no tracing, with
# ObjectSpace.trace_object_allocations (what dump_all(since:) needs), with
# our Native::Tracer, and with the tracer plus the census (its GC hooks and the
# reconciliation after each GC). Rounds alternate, in one process; medians are
# reported.
#
#   ruby bench/trace.rb            # 5 rounds of 20,000 iterations
#   CI=1 ruby bench/trace.rb       # smoke size
#   LIB=/other/checkout/lib ruby bench/trace.rb   # another build (before/after a change)
#   CLOCK=cpu ruby bench/trace.rb  # the thread's CPU time, not wall time (a busy machine)
require "json"
require "objspace"
$LOAD_PATH.unshift ENV.fetch("LIB", File.expand_path("../lib", __dir__))
require "rack/objectspace"

ROUNDS = Integer(ENV.fetch("ROUNDS", ENV["CI"] ? 2 : 5))
ITERATIONS = Integer(ENV.fetch("ITERATIONS", ENV["CI"] ? 2_000 : 20_000))
Tracer = Rack::Objectspace::Native::Tracer
CLOCK = ENV["CLOCK"] == "cpu" ? Process::CLOCK_THREAD_CPUTIME_ID : Process::CLOCK_MONOTONIC

require_relative "request_work"
KEEP = keep_heap

def measure(mode)
  case mode
  when :objspace then ObjectSpace.trace_object_allocations_start
  when :native then Tracer.start
  when :census
    Rack::Objectspace::Native::Census.enable
    Tracer.start
  end
  GC.start
  allocated = GC.stat(:total_allocated_objects)
  started = Process.clock_gettime(CLOCK)
  ITERATIONS.times { work }
  elapsed = Process.clock_gettime(CLOCK) - started
  [elapsed, GC.stat(:total_allocated_objects) - allocated]
ensure
  ObjectSpace.trace_object_allocations_stop if mode == :objspace
  ObjectSpace.trace_object_allocations_clear if mode == :objspace
  Tracer.stop if %i[native census].include?(mode)
  Rack::Objectspace::Native::Census.disable if mode == :census
end

modes = %i[none objspace native census]
times = modes.to_h { |m| [m, []] }
per_iteration = 0
work # warm up
ROUNDS.times do
  modes.each do |mode|
    elapsed, allocated = measure(mode)
    times[mode] << elapsed
    per_iteration = allocated / ITERATIONS
  end
end
median = ->(a) { a.sort[a.size / 2] }
base = median.(times[:none])
puts "#{ITERATIONS} iterations x #{ROUNDS} rounds, #{per_iteration} allocations each, #{KEEP.size} strings kept" \
     "#{ENV['CLOCK'] == 'cpu' ? ', thread CPU time' : ''}, #{$LOADED_FEATURES.grep(/rack_objectspace\.so/).first}"
modes.each do |mode|
  m = median.(times[mode])
  puts format("%-9s %8.1f ms  %6.2f us/iteration  %5.2fx untraced  %6.0f ns/allocation added", mode, m * 1000,
              m * 1e6 / ITERATIONS, m / base, (m - base) * 1e9 / (ITERATIONS * per_iteration))
end
puts format("census/native time: %.2f (census hooks per allocation: %+.0f ns)", median.(times[:census]) / median.(times[:native]),
            (median.(times[:census]) - median.(times[:native])) * 1e9 / (ITERATIONS * per_iteration))
ratio = median.(times[:native]) / median.(times[:objspace])
puts format("native/objspace time: %.2f (native tracing cost / objspace's: %.2f)", ratio,
            (median.(times[:native]) - base) / (median.(times[:objspace]) - base))
