# frozen_string_literal: true

require "rails/railtie"
require "rack/objectspace" unless defined?(Rack::Objectspace::Options)

module Rack
  class Objectspace
    # Rails integration: `require "rack/objectspace/railtie"` (or just
    # `require "rack/objectspace"` once Rails is loaded, as Bundler.require does)
    # and turn it on in an environment file:
    #
    #   # config/environments/staging.rb
    #   config.rack_objectspace.enabled = true
    #   config.rack_objectspace.store = "s3://my-bucket/heap-dumps"   # any Rack::Objectspace option
    #
    # or with RACK_OBJECTSPACE_ENABLED=1 (and the RACK_OBJECTSPACE_* variables
    # of the options). The middleware goes right after ActionDispatch::Static
    # when Rails serves static files, and at that same place (right after
    # Rack::Sendfile, where Rails puts ActionDispatch::Static) when it does not,
    # so static files are never dumped and nothing fails when they are off.
    class Railtie < ::Rails::Railtie
      # Options Rack::Objectspace.new takes (besides the app).
      OPTIONS = Options::NAMES

      config.rack_objectspace = ActiveSupport::OrderedOptions.new

      initializer "rack_objectspace.middleware" do |app|
        settings = app.config.rack_objectspace.to_h
        enabled = Railtie.enabled?(settings.delete(:enabled))
        options = Railtie.options(settings)
        if enabled
          static = app.config.public_file_server.enabled
          if static
            app.config.middleware.insert_after ::ActionDispatch::Static, Rack::Objectspace, **options
          else
            app.config.middleware.insert_after ::Rack::Sendfile, Rack::Objectspace, **options
          end
        end
      end

      # config.rack_objectspace.enabled, else RACK_OBJECTSPACE_ENABLED, else off
      # (so an app that already inserts the middleware by hand keeps one copy).
      # @raise [ArgumentError] for a value that is not a boolean word
      def self.enabled?(value)
        value = ENV["RACK_OBJECTSPACE_ENABLED"] if value.nil?
        return false if value.nil? || value == ""
        return true if Options::TRUE_WORDS.include?(value)
        return false if Options::FALSE_WORDS.include?(value)

        raise ArgumentError, "config.rack_objectspace.enabled (or RACK_OBJECTSPACE_ENABLED): must be true or false, " \
                             "got #{value.inspect}"
      end

      # The options for Rack::Objectspace.new, checked by name at boot.
      # @raise [ArgumentError] naming an option Rack::Objectspace does not take
      def self.options(settings)
        options = settings.to_h.transform_keys(&:to_sym)
        unknown = options.keys - OPTIONS
        unless unknown.empty?
          raise ArgumentError, "config.rack_objectspace.#{unknown.first}: not an option of Rack::Objectspace; " \
                               "expected enabled or one of #{OPTIONS.join(', ')}"
        end
        options
      end
    end
  end
end
