# frozen_string_literal: true

desc "cargo test for the pure-Rust core"
task :cargo_test do
  Dir.chdir(RackObjectspaceBuild::ROOT) do
    sh RackObjectspaceBuild.cargo_env, "cargo", "test", "--release", "-p", "objectspace_core"
  end
end

desc "RSpec for the Ruby surface (compiles first)"
task spec: :compile do
  sh "rspec"
end

task test: %i[cargo_test spec]
