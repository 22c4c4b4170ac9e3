# frozen_string_literal: true

# Rack::Objectspace::Options::TABLE is the one list of options: the
# middleware's keywords, variables and defaults come from it, and so does
# README.md's options table.
RSpec.describe Rack::Objectspace::Options do
  app = ->(_env) { [200, {}, ["ok"]] }
  readme = File.expand_path("../../README.md", __dir__)

  it "is the table README.md shows (run `rake readme:options` after changing it)" do
    table = described_class.readme_table(File.read(readme))
    expect(table).not_to be_nil, "README.md has no <!-- options --> ... <!-- /options --> block"
    expect(table).to eq(described_class.markdown)
  end

  it "rewrites only the block between the markers" do
    text = "intro\n<!-- options: made -->\n| old |\n| rows |\n<!-- /options -->\noutro\n"
    expect(described_class.in_readme(text, "| new |"))
      .to eq("intro\n<!-- options: made -->\n| new |\n<!-- /options -->\noutro\n")
    expect { described_class.in_readme("no table here\n", "| new |") }.to raise_error(ArgumentError, /no <!-- options -->/)
  end

  it "has one row per keyword, each with a doc line, and variables named RACK_OBJECTSPACE_<OPTION>" do
    expect(described_class::NAMES.uniq).to eq(described_class::NAMES)
    described_class::TABLE.each do |option|
      expect(option.doc).not_to be_empty
      expect(option.env).to eq("RACK_OBJECTSPACE_#{option.name.upcase}") if option.env
    end
  end

  it "rejects unknown keywords, naming them and every option it takes" do
    expect { Rack::Objectspace.new(app, store: {}, evry: 2, gzip: 1) }
      .to raise_error(ArgumentError, /\Aunknown keywords: :evry, :gzip; Rack::Objectspace takes store:, mode:, .*layout:\z/)
  end

  # For each option that has a variable: what the variable says and what the
  # middleware then holds, and a keyword (given along with the variable) and
  # what the middleware then holds; none of them the default.
  variables = {
    store: ["memory://from-env", "memory://from-env", { "k" => 1 }, { "k" => 1 }],
    mode: ["inline", :inline, "fork", :fork], dump: ["retained", :retained, :full, :full],
    every: ["7", 7, 2, 2], token: ["e" * 16, "e" * 16, "k" * 16, "k" * 16], gc: ["off", false, true, true],
    redact: ["no", false, "yes", true], max_children: ["3", 3, 5, 5], child_timeout: ["1.5", 1.5, 4, 4.0],
    queue_size: ["9", 9, 6, 6], flush_timeout: ["2", 2.0, 3, 3.0], census: ["0", false, true, true],
    auto_dump: ["30", 30.0, false, nil], sample_rate: ["100", 100, 50, 50], sample_seed: ["7", 7, 9, 9]
  }

  it "takes each option that has a variable from it, unless the keyword is given" do
    expect(variables.keys).to match_array(described_class::TABLE.select(&:env).map(&:name))
    variables.each do |name, (text, from_env, keyword, from_keyword)|
      variable = "RACK_OBJECTSPACE_#{name.upcase}"
      ENV[variable] = text
      base = name == :store ? {} : { store: {} }
      expect(Rack::Objectspace.new(app, logger: quiet_logger, **base).config.public_send(name))
        .to eq(from_env), "#{variable}=#{text}"
      expect(Rack::Objectspace.new(app, logger: quiet_logger, store: {}, name => keyword).config.public_send(name))
        .to eq(from_keyword), "#{variable}=#{text}, #{name}: #{keyword.inspect}"
    ensure
      ENV.delete(variable)
    end
  end

  it "takes a keyword given as nil for its default, except every: nil (dumps only on demand)" do
    defaults = Rack::Objectspace.new(app, store: {}, logger: quiet_logger).config
    (described_class::NAMES - %i[store every logger]).each do |name|
      expect(Rack::Objectspace.new(app, store: {}, logger: quiet_logger, name => nil).config.public_send(name))
        .to eq(defaults.public_send(name)), name.to_s
    end
    expect(Rack::Objectspace.new(app, store: {}, logger: quiet_logger, every: nil).config.every).to be_nil
  end

  describe "dumps with the census on" do
    define_method(:config) do |**options|
      Rack::Objectspace.new(app, store: {}, logger: quiet_logger, **options).config
    end

    it "takes no dump by count and lets the census ask for its own, unless every: is given" do
      expect(config).to have_attributes(census: true, every: nil, auto_dump: 600.0)
      expect(config(every: 100)).to have_attributes(every: 100, auto_dump: nil)
      expect(config(every: 100, auto_dump: true)).to have_attributes(every: 100, auto_dump: 600.0)
      expect(config(auto_dump: 5)).to have_attributes(auto_dump: 5.0)
      expect(config(census: false)).to have_attributes(every: 1, auto_dump: nil)
      expect(config(trace: false)).to have_attributes(census: false, every: 1, auto_dump: nil)
    end

    it "refuses auto_dump: without the census, or a value that is not a boolean or seconds" do
      expect { config(census: false, auto_dump: true) }
        .to raise_error(ArgumentError, /\Aauto_dump: must be false unless the census is on/)
      expect { config(auto_dump: "soon") }
        .to raise_error(ArgumentError, /\Aauto_dump: must be true, false or the least number of seconds .*got "soon"/)
      expect { config(auto_dump: 0) }.to raise_error(ArgumentError, /\Aauto_dump: must be true, false or/)
    end
  end
end
