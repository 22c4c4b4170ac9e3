# frozen_string_literal: true

require "rbconfig"
require "shellwords"
require_relative "version"

module Rack
  class Objectspace
    # The command that builds a compiled part again, for the error that finds it
    # missing, in a form that works where the user is. A checkout (a Rakefile
    # beside lib/) has rake tasks; an installed gem has no Rakefile, and `gem
    # pristine` runs ext/rack_objectspace/extconf.rb again, which builds the
    # extension for the running Ruby and rack-objectspace-export.
    module Rebuild
      ROOT = ::File.expand_path("../../..", __dir__)

      module_function

      # @param task [String] the rake task that builds the part in a checkout
      # @param root [String] the checkout's or the installed gem's folder
      # @return [String] a shell command, run with the Ruby that runs now
      # @example in a checkout
      #   Rebuild.command("compile:export") # => "cd /src/rack-objectspace && /usr/bin/ruby -S rake compile:export"
      # @example installed
      #   Rebuild.command("compile:export") # => "/usr/bin/ruby -S gem pristine rack-objectspace --version 0.2.0"
      def command(task, root: ROOT)
        ruby = RbConfig.ruby.shellescape
        return "cd #{root.shellescape} && #{ruby} -S rake #{task}" if ::File.exist?(::File.join(root, "Rakefile"))

        pristine = "#{ruby} -S gem pristine rack-objectspace --version #{VERSION}"
        # The gem's repository (GEMS/gems/rack-objectspace-X.Y.Z): named when `gem`
        # would not look there by itself (a `gem install --install-dir`).
        repository = ::File.expand_path("../..", root)
        return pristine if gem_path.include?(repository)

        "GEM_HOME=#{repository.shellescape} #{pristine}"
      end

      def gem_path
        defined?(::Gem) ? ::Gem.path.map { |p| ::File.expand_path(p) } : []
      end
    end
  end
end
