# frozen_string_literal: true

require_relative "lib/rack/objectspace/version"

Gem::Specification.new do |spec|
  spec.name = "rack-objectspace"
  spec.version = Rack::Objectspace::VERSION
  spec.authors = ["rack-objectspace developers"]
  spec.summary = "Find memory leaks in Rack and Rails apps: heap dumps after requests, analysed in Rust"
  spec.description = "A Rack middleware that dumps the Ruby heap after requests (in a forked child, " \
                     "redacted, gzipped, streamed to file://, s3:// or any []= store) and a fast Rust " \
                     "analyser that names the file:line whose objects keep growing."
  spec.license = "MIT"
  # The repository's address is the one place to change if it moves.
  source = "https://github.com/rack-objectspace/rack-objectspace"
  spec.homepage = source
  spec.metadata = {
    "source_code_uri" => source,
    "changelog_uri" => "#{source}/blob/main/CHANGELOG.md"
  }
  # bin/test runs RSpec on Ruby 3.1 (Debian 12's), 3.3 and 3.4 (bin/setup-rubies builds them).
  spec.required_ruby_version = [">= 3.1", "< 3.5"]

  spec.files = Dir[
    "lib/**/*.rb", "exe/*", "ext/**/*.{rs,rb,toml}", "Cargo.toml", "Cargo.lock",
    "README.md", "CHANGELOG.md", "LICENSE", "rack-objectspace.gemspec"
  ].reject { |f| f.include?("/tests/") || f.start_with?("ext/objectspace_core/benches") }
  spec.bindir = "exe"
  spec.executables = ["rack-objectspace"]
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/rack_objectspace/extconf.rb"]

  # The specs run Debian 12's rack (2.2); the middleware also follows Rack 3 (rack.response_finished).
  spec.add_dependency "rack", ">= 2.2", "< 4"
end
