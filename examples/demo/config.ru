# frozen_string_literal: true

# rackup examples/demo/config.ru, then hit /leak, /cache?id=N and /, then
#   exe/rack-objectspace leaks file://tmp/demo-dumps
require_relative "app"
require "rack/objectspace"

use Rack::Objectspace, store: "file://tmp/demo-dumps", dump: :retained, every: 1
run Demo::App.new
