# frozen_string_literal: true

require_relative "version"
require_relative "errors"
require_relative "rebuild"

# The Rust extension: Rack::Objectspace::Native (private API). `rake compile`
# and `gem install` build one per Ruby, in the running Ruby's version folder
# (the plain one is what an older install left). The extension itself refuses
# (LoadError naming both versions) to run on a Ruby it was not built for.
begin
  versioned = File.join(RUBY_VERSION[/\A\d+\.\d+/], "rack_objectspace")
  if File.exist?(File.join(__dir__, "#{versioned}.#{RbConfig::CONFIG['DLEXT']}"))
    require_relative versioned
  else
    require "rack/objectspace/rack_objectspace"
  end
rescue LoadError => e
  raise if e.message.include?("was built for Ruby")

  raise LoadError, "rack-objectspace's native extension is not compiled for Ruby #{RUBY_VERSION} (#{e.message}). " \
                   "To fix this, run `#{Rack::Objectspace::Rebuild.command('compile')}`."
end
