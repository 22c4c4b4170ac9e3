# frozen_string_literal: true

require_relative "version"
require_relative "errors"

# The Rust extension: Rack::Objectspace::Native (private API). A build for the
# running Ruby's version folder wins over the plain one.
begin
  RUBY_VERSION =~ /(\d+\.\d+)/
  require "rack/objectspace/#{Regexp.last_match(1)}/rack_objectspace"
rescue LoadError
  begin
    require "rack/objectspace/rack_objectspace"
  rescue LoadError => e
    raise LoadError, "rack-objectspace's native extension is not compiled (#{e.message}). " \
                     "To fix this, run `rake compile` in the gem's folder (or bin/setup)."
  end
end
