# frozen_string_literal: true

# What tracing and the census cost per allocation, in instructions executed
# (valgrind's callgrind): unlike time, a busy shared machine does not blur it.
# bench/trace.rb's request-like work runs ITERATIONS times on a 200k-string heap
# with no tracing, a NEWOBJ hook that does nothing (Ruby's own charge for any
# allocation hook: its slow allocation path and the hook's dispatch; a C
# extension built here with mkmf), the native tracer, the tracer plus the
# census, and the sampled census (one request in SAMPLE_RATE, default the
# option's: there each iteration is a census request, with its point); each
# mode is run again with 0 iterations, and the difference is divided by the
# allocations made. The tracer's own part is its cost over the empty hook.
#
#   ruby bench/trace_instructions.rb                      # 20,000 iterations (~4 min)
#   ITERATIONS=5000 ruby bench/trace_instructions.rb
#   CI=1 ruby bench/trace_instructions.rb                 # smoke size (200 iterations)
#   LIB=/other/checkout/lib ruby bench/trace_instructions.rb   # another build
require "open3"
require "rbconfig"
require "tmpdir"

# A NEWOBJ hook that does nothing, as the tracer sets its own (raw argument).
EMPTY_HOOK_C = <<~C
  #include <ruby.h>
  #include <ruby/debug.h>
  static void empty(VALUE data, rb_trace_arg_t *arg) { (void)data; (void)arg; }
  static VALUE on(VALUE self) {
    rb_add_event_hook2((rb_event_hook_func_t)empty, RUBY_INTERNAL_EVENT_NEWOBJ, Qnil,
                       RUBY_EVENT_HOOK_FLAG_SAFE | RUBY_EVENT_HOOK_FLAG_RAW_ARG);
    return Qnil;
  }
  void Init_empty_hook(void) { rb_define_singleton_method(rb_define_module("EmptyHook"), "on", on, 0); }
C

# Build the empty hook's extension in `dir` for this Ruby.
def build_empty_hook(dir)
  File.write(File.join(dir, "empty_hook.c"), EMPTY_HOOK_C)
  File.write(File.join(dir, "extconf.rb"), %(require "mkmf"; create_makefile("empty_hook")))
  _, err, status = Open3.capture3("#{RbConfig.ruby} extconf.rb && make", chdir: dir)
  abort "bench/trace_instructions.rb: the empty hook did not build:\n#{err}" unless status.success?
end

if ARGV.first == "--child"
  _, mode, iterations = ARGV
  $LOAD_PATH.unshift ENV.fetch("LIB", File.expand_path("../lib", __dir__))
  require "rack/objectspace"
  require_relative "request_work"
  keep = keep_heap
  require File.join(ENV.fetch("EMPTY_HOOK_DIR"), "empty_hook") if mode == "hook"
  native = Rack::Objectspace::Native
  native::Census.enable if %w[census sampled].include?(mode)
  native::Tracer.sample(Integer(ENV.fetch("SAMPLE_RATE", native::Tracer::DEFAULT_SAMPLE_RATE)), 1) if mode == "sampled"
  if mode == "hook"
    EmptyHook.on
  elsif mode != "none"
    native::Tracer.start
  end
  GC.start
  allocated = GC.stat(:total_allocated_objects)
  gcs = GC.count
  if mode == "sampled"
    native::Census.own(1) # the requests of an owner that is no Census object
    env = { "REQUEST_METHOD" => "GET", "PATH_INFO" => "/work" }
    Integer(iterations).times do
      native::Census.request(env, 1)
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
def run(mode, iterations, hook_dir)
  _, err, status = Open3.capture3({ "EMPTY_HOOK_DIR" => hook_dir }, "valgrind", "--tool=callgrind",
                                  "--callgrind-out-file=/dev/null", RbConfig.ruby, __FILE__, "--child", mode,
                                  iterations.to_s)
  abort "bench/trace_instructions.rb: #{mode} failed:\n#{err}" unless status.success?
  [Integer(err[/Collected : (\d+)/, 1]), Integer(err[/ALLOCATED (\d+)/, 1]), Integer(err[/GCS (\d+)/, 1])]
end

marginal = Dir.mktmpdir("objectspace-empty-hook-") do |hook_dir|
  build_empty_hook(hook_dir)
  %w[none hook native census sampled].to_h do |mode|
    boot, = run(mode, 0, hook_dir)
    total, allocations, gcs = run(mode, ITERATIONS, hook_dir)
    [mode, [total - boot, allocations, gcs]]
  end
end
allocations = marginal["none"][1]
puts "#{ITERATIONS} iterations of bench/trace.rb's work, #{allocations} allocations, " \
     "GCs: #{marginal.map { |m, (_, _, g)| "#{m} #{g}" }.join(', ')} (#{ENV.fetch('LIB', 'this checkout')})"
per = ->(mode) { marginal[mode][0].fdiv(allocations) }
puts format("instructions per allocation: untraced %.0f; native tracer +%.0f over untraced; " \
            "census +%.0f over the tracer; sampled census (1 request in %s) +%.0f over untraced",
            per.("none"), per.("native") - per.("none"), per.("census") - per.("native"),
            ENV.fetch("SAMPLE_RATE", "the default rate"), per.("sampled") - per.("none"))
puts format("Ruby's own charge for any NEWOBJ hook (an empty one): +%.0f over untraced; " \
            "the tracer's own part: +%.0f over it", per.("hook") - per.("none"), per.("native") - per.("hook"))
