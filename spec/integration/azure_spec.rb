# frozen_string_literal: true

require "openssl"
require "time"
require "securerandom"

# az://container/prefix against Azurite (the Azure Storage emulator), through
# object_store's Azure client with AZURE_STORAGE_USE_EMULATOR: accepted at boot
# and written for real, in fork and inline modes.
RSpec.describe "Rack::Objectspace with an Azure Blob store (Azurite)", :slow do
  # Azurite's well-known development account.
  ACCOUNT = "devstoreaccount1" # rubocop:disable Lint/ConstantDefinitionInBlock
  ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==" # rubocop:disable Lint/ConstantDefinitionInBlock

  before(:all) do
    @azurite = start_server!(:azurite)
    @container = "dumps-#{SecureRandom.hex(4)}"
    response = azure(:put, "/#{@container}", "restype" => "container")
    raise "Azurite did not create #{@container}: HTTP #{response.code} #{response.body}" unless response.code == "201"
  end

  after(:all) { @azurite&.stop }

  around do |example|
    with_env("AZURE_STORAGE_USE_EMULATOR" => "true", "AZURITE_BLOB_STORAGE_URL" => "http://127.0.0.1:#{@azurite.port}") do
      example.run
    end
  end

  let(:secret) { "s3cr3t-#{SecureRandom.hex(16)}" }
  let(:prefix) { "run-#{SecureRandom.hex(4)}" }

  # A Blob REST call signed with Shared Key (path-style emulator URL).
  def azure(method, path, query = {})
    headers = { "x-ms-date" => Time.now.httpdate, "x-ms-version" => "2021-08-06" }
    headers["Content-Type"] = "application/octet-stream" if method == :put
    canonical_headers = headers.select { |k, _| k.start_with?("x-ms-") }.sort.map { |k, v| "#{k}:#{v}\n" }.join
    resource = "/#{ACCOUNT}/#{ACCOUNT}#{path}" + query.sort.map { |k, v| "\n#{k}:#{v}" }.join
    to_sign = [method.to_s.upcase, "", "", "", "", headers["Content-Type"].to_s, "", "", "", "", "", ""].join("\n") +
              "\n#{canonical_headers}#{resource}"
    # pack("m0") / unpack1("m"): Base64's strict_encode64 and decode64 (base64 is no default gem from 3.4).
    signature = [OpenSSL::HMAC.digest("sha256", ACCOUNT_KEY.unpack1("m"), to_sign)].pack("m0")
    headers["Authorization"] = "SharedKey #{ACCOUNT}:#{signature}"
    uri = "/#{ACCOUNT}#{path}#{query.empty? ? '' : "?#{URI.encode_www_form(query)}"}"
    request = Net::HTTP.const_get(method.to_s.capitalize).new(uri, headers)
    request.body = "" if method == :put
    Net::HTTP.start("127.0.0.1", @azurite.port, read_timeout: 60) { |http| http.request(request) }
  end

  def blobs(under)
    body = azure(:get, "/#{@container}", "comp" => "list", "prefix" => "#{under}/", "restype" => "container").body
    body.scan(%r{<Name>([^<]+)</Name>}).flatten
  end

  def blob(name)
    response = azure(:get, "/#{@container}/#{name}")
    raise "GET #{name}: HTTP #{response.code}" unless response.code == "200"

    response.body.b
  end

  %i[fork inline].each do |mode|
    it "stores dumps and metadata under az://container/prefix with no string value of the app (#{mode})" do
      app, middleware = linted(holder_app(secret), store: "az://#{@container}/#{prefix}", mode: mode, max_children: 4)
      expect(serve_statuses(app, 2)).to eq([200, 200])
      expect(middleware.flush(60)).to include(dumped: 2, stored: 2, failed: 0, dropped: 0, pending: 0)

      names = blobs(prefix)
      dumps = names.grep(/\.jsonl\.gz\z/)
      expect(dumps.size).to eq(2)
      expect(names.grep(/\.meta\.json\z/).size).to eq(2)
      expect(dumps).to all(start_with("#{prefix}/#{Socket.gethostname}/#{Process.pid}/"))
      summary = heap_summary(blob(dumps.first))
      expect(summary[:lines]).to be > 1000
      expect(summary[:invalid]).to eq(0)
      texts = names.map { |n| (b = blob(n)).start_with?("\x1f\x8b".b) ? gunzip(b) : b }
      expect(texts.join).not_to include(secret)
    end
  end

  it "uploads a dump larger than one 8 MiB part in blocks that round-trip (fork)" do
    payload = Array.new(130_000) { SecureRandom.base64(75) }
    marker = payload[777]
    app, middleware = linted(holder_app(payload), store: "az://#{@container}/#{prefix}", mode: :fork,
                                                  redact: false, gc: false)
    expect(serve_statuses(app, 1)).to eq([200])
    expect(middleware.flush(120)).to include(stored: 1, failed: 0)
    dump = blobs(prefix).grep(/\.jsonl\.gz\z/).first
    bytes = blob(dump)
    expect(bytes.bytesize).to be > 8 * 1024 * 1024
    expect(gunzip(bytes)).to include(marker)
    blocks = azure(:get, "/#{@container}/#{dump}", "comp" => "blocklist").body.scan("<Block>").size
    expect(blocks).to be >= 2 # a block blob committed from parts, not one PUT
  end

  it "counts failures and serves requests when the container does not exist" do
    app, middleware = linted(holder_app(secret), store: "az://no-such-container/p", mode: :inline,
                                                 dump: :retained, queue_size: 2)
    expect(serve_statuses(app, 4)).to all(eq(200))
    stats = middleware.flush(60)
    expect(stats).to include(stored: 0, pending: 0)
    expect(stats[:failed] + stats[:dropped]).to eq(4)
    expect(logged.each_line.grep(/event=(store|dump)_failed .*ContainerNotFound/).size).to eq(1)
  end
end
