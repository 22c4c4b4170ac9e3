# frozen_string_literal: true

require "open3"

# How small a leak the sampled census finds at its default rate (one
# request in Native::Tracer::DEFAULT_SAMPLE_RATE) within 5,000 requests:
# spec/fixtures/sampled_leak.rb keeps one String every N requests among ~200
# objects of garbage a request. One every 10 requests (0.1 objects a
# request, twice `leaks`' noise floor, Analysis::NOISE_PER_REQUEST; ~30 of
# its 500 objects sampled by the end at 1 in 16) is found, alone, in every
# run. One every 15 (0.067) was found in 9 runs of 10; one every 20 (0.05,
# on the floor) in 6: the sample's noise moves its rate across the floor.
# Slower leaks are under the floor, exact census or not.
RSpec.describe "The sampled census's smallest leak" do
  def leaks(every, requests, seed)
    out, err, status = Open3.capture3(RbConfig.ruby, "spec/fixtures/sampled_leak.rb", every.to_s, requests.to_s,
                                      seed.to_s, chdir: File.expand_path("../..", __dir__))
    expect(status).to be_success, err
    JSON.parse(out)
  end

  it "finds one object kept every 10 requests within 5,000 requests, in every run" do
    rate = Rack::Objectspace::Native::Tracer::DEFAULT_SAMPLE_RATE
    (1..6).each do |seed|
      report = leaks(10, 5_000, seed)
      expect(report["sites"].map { |s| s["location"] }).to match([a_string_ending_with("sampled_leak.rb:23")]),
                                                          "seed #{seed}"
      # 500 kept. Not asserted within the 95% interval: with one kept every
      # 15 requests this fixture's Strings were sampled ~1.2x as often as 1
      # in 8 over nine runs, unexplained (docs/census.md, the sampled census).
      expect(report["sites"].first["count"]).to be_between(250, 1_000), "seed #{seed}"
      expect(report["processes"].first["census_sample"]).to eq(rate)
    end
  end
end
