# frozen_string_literal: true

require "securerandom"
require "rexml/document"

# s3://bucket/prefix against a real S3-compatible server (moto's server mode),
# in fork mode (the child streams the upload) and inline mode (the native writer).
RSpec.describe "Rack::Objectspace with an S3 store (moto server)", :slow do
  before(:all) do
    @moto = start_server!(:moto)
    @endpoint = "http://127.0.0.1:#{@moto.port}"
    @bucket = "dumps-#{SecureRandom.hex(4)}"
    code = s3_http { |h| h.put("/#{@bucket}", "") }.code
    raise "moto did not create bucket #{@bucket}: HTTP #{code}" unless code == "200"
  end

  after(:all) { @moto&.stop }

  # AWS_* as a user would set them; restored after each example.
  around do |example|
    with_env("AWS_ENDPOINT" => @endpoint, "AWS_ACCESS_KEY_ID" => "test", "AWS_SECRET_ACCESS_KEY" => "test",
             "AWS_REGION" => "us-east-1", "AWS_ENDPOINT_URL" => nil) do
      example.run
    end
  end

  let(:secret) { "s3cr3t-#{SecureRandom.hex(16)}" }
  let(:prefix) { "run-#{SecureRandom.hex(4)}" }
  let(:store_url) { "s3://#{@bucket}/#{prefix}" }

  # moto does not check signatures, but refuses anonymous reads of private
  # objects: any AWS4 Authorization header will do.
  AUTH = { "Authorization" => "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, " \
                              "SignedHeaders=host, Signature=0" }.freeze

  def s3_http(&block)
    Net::HTTP.start("127.0.0.1", @moto.port, open_timeout: 5, read_timeout: 60, &block)
  end

  def s3_list(under)
    body = s3_http { |h| h.get("/#{@bucket}?list-type=2&max-keys=1000&prefix=#{under}/", AUTH) }.body
    REXML::Document.new(body).get_elements("//Contents").to_h do |c|
      [c.elements["Key"].text, { size: c.elements["Size"].text.to_i, etag: c.elements["ETag"].text }]
    end
  end

  def s3_get(key)
    response = s3_http { |h| h.get("/#{@bucket}/#{key}", AUTH) }
    raise "GET #{key}: HTTP #{response.code} #{response.body[0, 500]}" unless response.code == "200"

    response.body.b
  end

  %i[fork inline].each do |mode|
    context "in #{mode} mode" do
      it "stores dumps and metadata under the URL's prefix, gunzipping to heap records, with no string value of the app" do
        app, middleware = linted(holder_app(secret), store: store_url, mode: mode, max_children: 4)
        expect(serve_statuses(app, 2)).to eq([200, 200])
        expect(middleware.flush(60)).to include(dumped: 2, stored: 2, failed: 0, dropped: 0, pending: 0)

        objects = s3_list(prefix)
        dumps = objects.keys.grep(/\.jsonl\.gz\z/)
        expect(dumps.size).to eq(2)
        expect(objects.keys.grep(/\.meta\.json\z/).size).to eq(2)
        expect(dumps).to all(start_with("#{prefix}/#{Socket.gethostname}/#{Process.pid}/"))

        bytes = objects.keys.map { |k| s3_get(k) }
        texts = bytes.map { |b| b.start_with?("\x1f\x8b".b) ? gunzip(b) : b }
        summary = heap_summary(s3_get(dumps.first))
        expect(summary[:lines]).to be > 1000
        expect(summary[:invalid]).to eq(0)
        expect(summary[:types]).to include("STRING", "CLASS", "ROOT")
        expect(texts.join).not_to include(secret)
        expect(bytes.join).not_to include(secret.b)
        texts = bytes = nil

        # The control: with values kept, the same secret does reach S3.
        app, middleware = linted(holder_app(secret), store: "#{store_url}-plain", mode: mode, redact: false)
        serve_statuses(app, 1)
        expect(middleware.flush(60)).to include(stored: 1)
        plain = s3_list("#{prefix}-plain").keys.grep(/\.jsonl\.gz\z/)
        expect(gunzip(s3_get(plain.first))).to include(secret)
      end

      it "uploads a dump larger than one part (8 MiB gzipped) as a multipart upload that round-trips" do
        # ~13 MB of incompressible base64 strings on the heap, kept in the dump.
        payload = Array.new(130_000) { SecureRandom.base64(75) }
        marker = payload[4242]
        app, middleware = linted(holder_app(payload), store: store_url, mode: mode, redact: false, gc: false)
        expect(serve_statuses(app, 1)).to eq([200])
        expect(middleware.flush(120)).to include(stored: 1, failed: 0)

        dump_key, info = s3_list(prefix).find { |k, _| k.end_with?(".jsonl.gz") }
        expect(info[:size]).to be > 8 * 1024 * 1024
        # S3 (and moto) give a multipart object the ETag "<md5 of part md5s>-<parts>".
        parts = info[:etag][/-(\d+)"?\z/, 1]
        expect(parts).not_to be_nil, "expected a multipart ETag, got #{info[:etag]}"
        expect(parts.to_i).to be >= 2
        bytes = s3_get(dump_key)
        expect(bytes.bytesize).to eq(info[:size])
        expect(gunzip(bytes)).to include(marker)
        next unless mode == :fork && File.exist?("/proc/self/clear_refs")

        # Never buffered whole: the child's peak memory grew by a fraction of the JSON it streamed.
        meta = JSON.parse(s3_get(dump_key.sub(/\.jsonl\.gz\z/, ".meta.json")))
        expect(meta["child_peak_rss_growth_kb"] * 1024).to be < meta["bytes"] / 2
      end
    end
  end

  describe "when S3 fails" do
    def expect_served_and_counted(mode, url, requests: 6)
      app, middleware = linted(holder_app(secret), store: url, mode: mode, dump: :retained, max_children: 2,
                                                  queue_size: 2)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect(serve_statuses(app, requests)).to all(eq(200))
      served_in = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      stats = middleware.flush(90)
      expect(stats[:pending]).to eq(0)
      expect(stats[:stored]).to eq(0)
      expect(stats[:failed]).to be >= 1
      expect(stats[:stored] + stats[:failed] + stats[:dropped]).to eq(requests)
      failures = logged.each_line.grep(/event=(store|dump)_failed /)
      expect(failures.size).to eq(1), "one failure line per burst, got:\n#{failures.join}"
      [served_in, failures.first]
    end

    %i[fork inline].each do |mode|
      it "serves requests and counts failures when the endpoint is unreachable (#{mode})" do
        ENV["AWS_ENDPOINT"] = "http://127.0.0.1:#{TestServers.free_port}"
        served_in, line = expect_served_and_counted(mode, store_url)
        expect(line).to match(/at=warn/)
        expect(served_in).to be < 5 # the failing uploads never ran on the request thread
      end

      it "serves requests and counts failures when S3 answers with errors: no such bucket (#{mode})" do
        _, line = expect_served_and_counted(mode, "s3://no-such-bucket-#{SecureRandom.hex(4)}/p")
        expect(line).to match(/NoSuchBucket|404|Not ?Found/i)
      end
    end
  end

  describe "store URLs at boot" do
    it "accepts gs:// (credentials are looked up when writing, not at boot)" do
      expect { Rack::Objectspace.new(->(_) {}, store: "gs://bucket/prefix", logger: quiet_logger) }.not_to raise_error
    end

    it "accepts az:// once an account is configured, and says what is missing otherwise" do
      ENV.delete("AZURE_STORAGE_ACCOUNT_NAME")
      expect { Rack::Objectspace.new(->(_) {}, store: "az://container/prefix", logger: quiet_logger) }
        .to raise_error(ArgumentError, /az:\/\/container\/prefix.*Account must be specified/)
      ENV["AZURE_STORAGE_ACCOUNT_NAME"] = "devaccount"
      expect { Rack::Objectspace.new(->(_) {}, store: "az://container/prefix", logger: quiet_logger) }
        .not_to raise_error
    end

    it "refuses an unknown scheme with an ArgumentError naming it and the accepted ones" do
      %w[ftp://host/dir redis://127.0.0.1:6379/0 dumps].each do |url|
        expect { Rack::Objectspace.new(->(_) {}, store: url, logger: quiet_logger) }
          .to raise_error(ArgumentError, /store.*#{Regexp.escape(url)}.*s3:\/\/BUCKET/m)
      end
    end
  end
end
