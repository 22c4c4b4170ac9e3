# frozen_string_literal: true

module Rack
  class Objectspace
    VERSION = "0.2.0"
  end
end
