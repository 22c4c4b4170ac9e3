# frozen_string_literal: true

require "open3"

# A machine without a server, Rails or chromium must not pass for green under
# CI: a spec skips for something missing only through skip_outside_ci, which
# fails under CI=true. What a platform cannot do (GC.compact, clear_refs) is
# no gap in the machine, and may skip.
RSpec.describe "skipping what is missing" do
  # Runs a one-example spec that calls skip_outside_ci, under CI=ci: [output, exit status].
  def run_example(ci)
    Dir.mktmpdir("skips") do |dir|
      File.write(File.join(dir, "missing_spec.rb"), <<~RUBY)
        RSpec.describe("a spec") { it("needs redis") { skip_outside_ci "redis-server is not installed" } }
      RUBY
      out, status = Open3.capture2e({ "CI" => ci }, RbConfig.ruby, "-S", "rspec", "--require", File.join(__dir__, "spec_helper"),
                                    File.join(dir, "missing_spec.rb"), chdir: File.expand_path("..", __dir__))
      [out, status.exitstatus]
    end
  end

  it "fails under CI=true, and skips with the reason elsewhere" do
    out, status = run_example("true")
    expect(status).to eq(1)
    expect(out).to include("redis-server is not installed (CI=true: nothing that can run is skipped)", "1 failure")
    out, status = run_example(nil)
    expect(status).to eq(0)
    expect(out).to include("1 example, 0 failures, 1 pending", "redis-server is not installed")
  end

  it "is how every spec skips, but for what the platform lacks" do
    platform = /GC\.compact|GC compaction|clear_refs/
    bare = Dir[File.join(__dir__, "**", "*_spec.rb")].reject { |f| f == __FILE__ }.flat_map do |file|
      File.readlines(file).each_with_index.filter_map do |line, i|
        "#{file}:#{i + 1}: #{line.strip}" if line.match?(/(?<![\w.])skip[ (]/) && !line.match?(platform)
      end
    end
    expect(bare).to eq([])
  end
end
