# frozen_string_literal: true

# README.md's options table is made from Rack::Objectspace::Options::TABLE
# (spec/rack/options_spec.rb fails when they differ): edit the table there,
# then run this. It loads the gem, so the extension must be compiled.
namespace :readme do
  desc "Rewrite README.md's options table (between <!-- options --> and <!-- /options -->)"
  task :options do
    $LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
    require "rack/objectspace"
    path = File.expand_path("../README.md", __dir__)
    readme = File.read(path)
    updated = Rack::Objectspace::Options.in_readme(readme, Rack::Objectspace::Options.markdown)
    File.write(path, updated) unless updated == readme
    puts updated == readme ? "README.md: options table unchanged" : "README.md: options table rewritten"
  end
end
