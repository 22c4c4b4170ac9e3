# frozen_string_literal: true

# `make` in ext/rack_objectspace (extconf.rb's Makefile, on `gem install` or
# `gem pristine`): cargo builds the extension and rack-objectspace-export,
# copied here as DLLIB and EXPORT for `make install`.
#
#   ruby build.rb ROOT DLLIB EXPORT
#
# cargo's target folder is CARGO_TARGET_DIR when it is set (kept, so that the
# next install reuses what it compiled), else a temporary folder outside the
# gem's, removed once the artefacts are copied: the installed gem holds the
# two artefacts, not cargo's half a gigabyte of intermediate files.
require "fileutils"
require "rbconfig"
require "tmpdir"

root, dllib, export = ARGV
abort "usage: ruby build.rb ROOT DLLIB EXPORT" unless export

given = ENV.fetch("CARGO_TARGET_DIR", "")
target = given.empty? ? Dir.mktmpdir("rack-objectspace-cargo-") : File.expand_path(given)
begin
  env = { "RUBY" => RbConfig.ruby, "CARGO_TARGET_DIR" => target }
  # One package a run, as `rake compile` and `rake compile:export` build them: built
  # together, cargo would unify the two's dependency features and compile the
  # dependencies anew instead of reusing a CARGO_TARGET_DIR's.
  %w[rack_objectspace objectspace_export].each do |package|
    command = ["cargo", "build", "--release", "--locked", "-p", package]
    warn "rack-objectspace: #{command.join(' ')} (CARGO_TARGET_DIR=#{target})"
    system(env, *command, chdir: root, exception: true)
  end
  soext = RbConfig::CONFIG["SOEXT"] || "so"
  FileUtils.cp(File.join(target, "release", "librack_objectspace.#{soext}"), dllib)
  FileUtils.cp(File.join(target, "release", "rack-objectspace-export"), export)
ensure
  FileUtils.rm_rf(target) if given.empty?
end
