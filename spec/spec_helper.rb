# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)

require "rack/objectspace"
require "rack/lint"
require "rack/mock"
require "json"
require "zlib"
require "tmpdir"
require "fileutils"

Dir[File.join(__dir__, "support", "**", "*.rb")].sort.each { |f| require f }

RSpec.configure do |config|
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :defined
  config.filter_run_when_matching :focus
end

# GC_STRESS=true runs the native calls inside `stressed { }` under GC.stress, to
# catch objects the glue forgets to keep alive (bin/test runs the :gc_stress specs so).
module GCStress
  def stressed
    GC.stress = ENV["GC_STRESS"] == "true"
    yield
  ensure
    GC.stress = false
  end
end
RSpec.configure { |c| c.include GCStress }
