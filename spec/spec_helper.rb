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
  # GC_STRESS=true runs the suite under GC.stress to catch GC bugs in the glue.
  if ENV["GC_STRESS"] == "true"
    config.around(:each, :gc_stress) do |example|
      GC.stress = true
      example.run
    ensure
      GC.stress = false
    end
  end
end
