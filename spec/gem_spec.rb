# frozen_string_literal: true

require "open3"
require "find"
require "rubygems/package"

# The packaged gem as a user gets it: `gem build` (no warning), then an offline
# `gem install --local`, which runs extconf.rb (cargo, no rb_sys gem) out of the
# gem's folder. The installed gem holds what its commands need and not cargo's
# target/; it loads, `rack-objectspace export` runs; what goes missing is
# named with the command that builds it again, and that command works.
#
# The build reuses the caller's cargo target folder (CARGO_TARGET_DIR, else the
# checkout's target/) for the dependencies: the installed gem's own crates still
# compile from the gem's copy, as a user's do.
RSpec.describe "rack-objectspace.gem", :slow do
  root = File.expand_path("..", __dir__)
  version = Rack::Objectspace::VERSION
  ruby_version = RUBY_VERSION[/\A\d+\.\d+/]

  def folder_bytes(dir)
    Find.find(dir).sum { |f| File.lstat(f).file? ? File.lstat(f).size : 0 }
  end

  # Runs a command in the installed gem's environment: [output, status].
  def run_installed(*command, env: @env, chdir: @dir)
    Open3.capture2e(env, *command, chdir: chdir)
  end

  before(:all) do
    @dir = Dir.mktmpdir("gem-spec")
    @build, status = Open3.capture2e("gem", "build", "rack-objectspace.gemspec", "--output", "#{@dir}/r.gem", chdir: root)
    raise @build unless status.success?

    @home = File.join(@dir, "home")
    @env = {
      "GEM_HOME" => @home,
      "GEM_PATH" => [@home, *Gem.path].join(":"),
      "CARGO_TARGET_DIR" => ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target")),
      "RUBYLIB" => nil, "RUBYOPT" => nil
    }
    @install, status = run_installed("gem", "install", "--local", "--no-document", "#{@dir}/r.gem")
    raise @install unless status.success?

    @gem = File.join(@home, "gems", "rack-objectspace-#{version}")
    @so = File.join(@gem, "lib", "rack", "objectspace", ruby_version, "rack_objectspace.#{RbConfig::CONFIG['DLEXT']}")
    @export = File.join(@gem, "lib", "rack", "objectspace", "rack-objectspace-export")
    @exe = File.join(@home, "bin", "rack-objectspace")
    # A small census store, written by the checkout's middleware.
    @store = File.join(@dir, "store")
    _out, err, status = Open3.capture3(RbConfig.ruby, File.join(root, "spec/fixtures/census_app.rb"), @store,
                                       '{"every":null}', "40", chdir: root)
    raise err unless status.success?
  end
  after(:all) { FileUtils.rm_rf(@dir) }

  it "builds without a warning, with its links and the Rubies and rack it is tested with" do
    expect(@build).not_to match(/warning/i)
    spec = Gem::Package.new("#{@dir}/r.gem").spec
    expect(spec.homepage).to start_with("https://")
    expect(spec.metadata.keys).to include("source_code_uri", "changelog_uri")
    expect(spec.metadata["changelog_uri"]).to end_with("/CHANGELOG.md")
    # CHANGELOG.md, when the checkout has one, is in the gem the changelog_uri points to.
    expect(spec.files).to include("CHANGELOG.md") if File.exist?(File.join(root, "CHANGELOG.md"))
    %w[3.1.0 3.3.0 3.4.0].each { |v| expect(spec.required_ruby_version).to be_satisfied_by(Gem::Version.new(v)) }
    expect(spec.required_ruby_version).not_to be_satisfied_by(Gem::Version.new("3.0.7"))
    rack = spec.dependencies.find { |d| d.name == "rack" }.requirement
    expect(rack).to be_satisfied_by(Gem::Version.new(Rack.release))
    expect(rack).not_to be_satisfied_by(Gem::Version.new("4.0.0"))
  end

  it "installs the extension in this Ruby's folder and rack-objectspace-export, without cargo's target/" do
    expect(File.file?(@so)).to be(true), Dir.glob("**/*", base: @gem).inspect
    expect(File.executable?(@export)).to be(true)
    expect(Dir.exist?(File.join(@gem, "target"))).to be(false)
    bytes = folder_bytes(@gem)
    expect(bytes).to be < 60 * 1024 * 1024, "#{bytes} bytes in #{@gem}"
    # Nor anywhere else in the gem repository (extensions/, cache/, bin/).
    expect(Dir.glob("**/target", base: @home)).to eq([])
  end

  it "loads with require \"rack/objectspace\", from the installed gem" do
    script = 'require "rack/objectspace"; print Rack::Objectspace::VERSION, " ", ' \
             '$LOADED_FEATURES.grep(/rack_objectspace\.so/).first, " ", Rack::Objectspace::Native.check_store("memory://x")'
    out, status = run_installed(RbConfig.ruby, "-e", script)
    expect(status).to be_success, out
    expect(out.split(" ")).to eq([version, @so, "false"])
  end

  it "runs `rack-objectspace export` on a census store" do
    out, status = run_installed(@exe, "export", @store, File.join(@dir, "out"))
    expect(status).to be_success, out
    expect(out).to match(/census: \d+ rows from 1 process\(es\) on 1 host\(s\)/)
    expect(Dir.glob("census/*/*.parquet", base: File.join(@dir, "out")).size).to eq(1)
  end

  # What a user sees when the extension or the export program is gone (a Ruby the gem
  # was not built with, a cleaned folder): the command to run, as printed, here from a
  # shell that does not have the gem's repository on its gem path. The command runs
  # with MAKE=true: it finds the gem, reinstalls it from its cached .gem and runs
  # extconf.rb again, and leaves out the compile the install above proved (a second
  # build of the crates would double this spec's time).
  it "names `gem pristine` when a compiled part is missing, and the command runs as printed" do
    FileUtils.rm_f([@so, @export])
    # Its own gem path, less the gem's repository (rack comes from there on a Ruby
    # other than Debian's).
    bare = @env.merge("GEM_HOME" => nil, "GEM_PATH" => Gem.path.join(":"))
    pristine = "#{RbConfig.ruby} -S gem pristine rack-objectspace --version #{version}"
    out, status = run_installed(RbConfig.ruby, "-I", File.join(@gem, "lib"), "-e", 'require "rack/objectspace"', env: bare)
    expect(status).not_to be_success
    expect(out).to include("not compiled for Ruby #{RUBY_VERSION}", "To fix this, run `GEM_HOME=#{@home} #{pristine}`.")
    out, status = run_installed(RbConfig.ruby, "-I", File.join(@gem, "lib"), File.join(@gem, "exe", "rack-objectspace"),
                                "export", @store, File.join(@dir, "out2"), env: bare)
    expect(status.exitstatus).to eq(1)
    command = out[/To fix this, run `(.*)`\./, 1]
    expect(command).to eq("GEM_HOME=#{@home} #{pristine}")
    # Where the gem is on the gem path (its own bin/rack-objectspace), the plain command.
    out, status = run_installed(@exe, "export", @store, File.join(@dir, "out2"))
    expect(status.exitstatus).to eq(1)
    expect(out).to include("To fix this, run `#{pristine}`.")

    makefile = File.join(@gem, "ext", "rack_objectspace", "Makefile")
    FileUtils.rm_f(makefile)
    out, status = run_installed("sh", "-c", command, env: bare.merge("MAKE" => "true"))
    expect(status).to be_success, out
    expect(out).to include("Restored rack-objectspace-#{version}")
    expect(File.read(makefile)).to include(File.join(@gem, "lib", "rack", "objectspace"), "build.rb")
  end
end
