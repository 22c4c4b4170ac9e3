# frozen_string_literal: true

require_relative "options"

module Rack
  class Objectspace
    # Validated options. Every option is a keyword, else a RACK_OBJECTSPACE_*
    # variable, else a default (Options::TABLE); anything wrong raises
    # ArgumentError at boot, naming the option, the value and what is accepted.
    class Config
      # One reader per option of Options::TABLE: plain attribute readers,
      # as the middleware reads some on every request.
      attr_reader(*Options::NAMES)

      # @return [String, nil] the store's URL; nil for a []= store
      attr_reader :store_url

      # @param keywords [Hash{Symbol => Object}] the keywords given to Rack::Objectspace.new
      # @raise [ArgumentError] for an unknown keyword or a bad value, alone or with the others
      def initialize(**keywords)
        Options.resolve(keywords).each { |name, value| instance_variable_set(:"@#{name}", value) }
        check_store
        if every.nil? && token.nil? && !census
          Options.fail!(:every, nil, "a positive Integer when token: is not set and census: is off " \
                                     "(nil dumps only on demand, with the token)")
        end
        if census == :sampled && dump == :retained && !every.nil?
          Options.fail!(:census, :sampled, "true or false with dump: :retained and every: set (retained dumps need " \
                                           "every allocation traced; the sampled census records one in sample_rate:)")
        end
        if dump == :retained && !trace
          Options.fail!(:trace, false, "true, :native or :objspace with dump: :retained " \
                                       "(it keeps objects by allocation generation)")
        end
        freeze
      end

      # True when a fork child can write to the store itself (file://, s3:// ...);
      # false when the parent must (memory://, Hash, Moneta ...).
      def child_writes?
        !@store_url.nil? && @shared_url
      end

      private

      # A URL store is checked (and a file:// folder created) by the native
      # writer, last, so that a bad option creates nothing.
      def check_store
        return unless store.is_a?(String)

        @store_url = store
        @shared_url = Native.check_store(store)
        Options.fail!(:layout, layout, ":dump for URL stores (:object is for []= stores)") if layout == :object
      end
    end
  end
end
