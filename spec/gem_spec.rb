# frozen_string_literal: true

require "open3"

# The packaged gem: `gem build`, then an offline `gem install --local`, which
# runs extconf.rb (cargo, no rb_sys gem), and the installed gem loads.
RSpec.describe "rack-objectspace.gem" do
  root = File.expand_path("..", __dir__)

  it "builds, compiles on gem install --local, and loads with require \"rack/objectspace\"" do
    Dir.mktmpdir("gem-spec") do |dir|
      out, status = Open3.capture2e("gem", "build", "rack-objectspace.gemspec", "--output", "#{dir}/r.gem", chdir: root)
      expect(status).to be_success, out
      gem_home = File.join(dir, "home")
      env = {
        "GEM_HOME" => gem_home,
        "GEM_PATH" => [gem_home, *Gem.path].join(":"),
        # Reuse the checkout's compiled dependencies (or those of the target dir the caller
        # builds in); the gem's own crates still build from the gem's copy.
        "CARGO_TARGET_DIR" => ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target")),
        "RUBYLIB" => nil, "RUBYOPT" => nil
      }
      out, status = Open3.capture2e(env, "gem", "install", "--local", "--no-document", "#{dir}/r.gem", chdir: dir)
      expect(status).to be_success, out
      script = 'require "rack/objectspace"; print Rack::Objectspace::VERSION, " ", ' \
               '$LOADED_FEATURES.grep(/rack_objectspace\.so/).first, " ", Rack::Objectspace::Native.check_store("memory://x")'
      out, status = Open3.capture2e(env, RbConfig.ruby, "-e", script, chdir: dir)
      expect(status).to be_success, out
      version, so, shared = out.split(" ")
      expect(version).to eq(Rack::Objectspace::VERSION)
      expect(so).to start_with(gem_home)
      expect(shared).to eq("false")
    end
  end
end
