# frozen_string_literal: true

require "rbconfig"
require "fileutils"

# The rb_sys gem is not available offline, so we drive cargo ourselves: build the
# cdylib in release mode and copy it to the name Ruby loads (Init_rack_objectspace).
# It is built for the Ruby that runs rake (RbConfig.ruby, whatever `rake` is on
# PATH: `ruby3.3 -S rake compile` builds for 3.3), into that Ruby's folder.
module RackObjectspaceBuild
  ROOT = File.expand_path("..", __dir__)
  CRATE = "rack_objectspace"

  module_function

  def cargo_env
    { "RUBY" => RbConfig.ruby }
  end

  def built_library(profile = "release")
    dir = ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))
    File.join(dir, profile, "lib#{CRATE}.#{RbConfig::CONFIG['SOEXT'] || 'so'}")
  end

  # lib/rack/objectspace/<major.minor>/: one build per Ruby, side by side
  # (lib/rack/objectspace/native.rb loads the running Ruby's).
  def installed_library
    version = RUBY_VERSION[/\A\d+\.\d+/]
    File.join(ROOT, "lib", "rack", "objectspace", version, "#{CRATE}.#{RbConfig::CONFIG['DLEXT']}")
  end

  # The files the extension is built from.
  def sources
    Dir.glob(File.join(ROOT, "{Cargo.toml,Cargo.lock,ext/{objectspace_core,rack_objectspace}/**/*.{rs,toml}}"))
  end

  # The running Ruby's library is newer than every source: nothing to build.
  # cargo would find that out too, but only after rebuilding the crates that
  # read RUBY (rb-sys and ours) whenever the last build was for another Ruby:
  # bin/setup and bin/test compile for three Rubies in turn.
  def up_to_date?
    return false if ENV["FORCE"]

    installed = installed_library
    File.exist?(installed) && sources.all? { |f| File.mtime(f) <= File.mtime(installed) }
  end
end

desc "Compile the Rust extension into lib/rack/objectspace/ (FORCE=1: even when it is newer than its sources)"
task :compile do
  if RackObjectspaceBuild.up_to_date?
    puts "#{RackObjectspaceBuild.installed_library}: up to date"
    next
  end
  Dir.chdir(RackObjectspaceBuild::ROOT) do
    sh RackObjectspaceBuild.cargo_env, "cargo", "build", "--release", "-p", RackObjectspaceBuild::CRATE
  end
  # Copy then rename: overwriting the .so in place crashes every Ruby that has it
  # loaded (a spec run, a puma), since they map the same inode.
  installed = RackObjectspaceBuild.installed_library
  FileUtils.mkdir_p(File.dirname(installed))
  FileUtils.cp(RackObjectspaceBuild.built_library, "#{installed}.tmp-#{Process.pid}")
  File.rename("#{installed}.tmp-#{Process.pid}", installed)
end

namespace :compile do
  desc "Build rack-objectspace-export (the Parquet export; a crate of its own, not part of the extension)"
  task :export do
    Dir.chdir(RackObjectspaceBuild::ROOT) do
      sh "cargo", "build", "--release", "-p", "objectspace_export"
    end
    dir = ENV.fetch("CARGO_TARGET_DIR", File.join(RackObjectspaceBuild::ROOT, "target"))
    built = File.join(dir, "release", "rack-objectspace-export")
    installed = File.join(RackObjectspaceBuild::ROOT, "lib", "rack", "objectspace", "rack-objectspace-export")
    FileUtils.cp(built, "#{installed}.tmp-#{Process.pid}")
    File.rename("#{installed}.tmp-#{Process.pid}", installed)
  end
end
