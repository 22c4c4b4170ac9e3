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

# What a spec needs that is not installed (a server's binary, Rails) skips it
# with the reason on a developer's machine, and fails it under CI: there
# bin/setup installs everything, and nothing that can run is skipped. What
# cannot run on a Ruby is tagged instead, with the reason as the tag's value,
# and bin/test leaves it out on that Ruby alone:
#   debian_ruby_only: needs a gem's C extension that Debian builds for its own
#   Ruby (3.1) only; the Rubies bin/setup-rubies builds have none (--tag ~debian_ruby_only).
# Specs that take tens of seconds or more (the gem build, real servers, Rails,
# Spark, big heaps) are tagged :slow: `bin/test --fast` (rspec --tag ~slow)
# leaves them out for day-to-day work; bin/test and CI run everything.
module SkipOutsideCI
  def skip_outside_ci(reason)
    raise "#{reason} (CI=#{ENV.fetch('CI')}: nothing that can run is skipped)" unless ENV.fetch("CI", "").empty?

    skip(reason)
  end
end
RSpec.configure { |c| c.include SkipOutsideCI }
