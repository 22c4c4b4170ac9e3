# frozen_string_literal: true

require "cgi"
require_relative "text"

module Rack
  class Objectspace
    module Analysis
      # One self-contained HTML page per report: inline CSS and inline SVG
      # charts, no script and no network access, so it opens from a file, a CI
      # artifact or an email attachment.
      module Html
        COLORS = %w[#d62728 #1f77b4 #2ca02c #ff7f0e #9467bd #8c564b #e377c2 #17becf].freeze
        # A census series of more steps than this is drawn with the min and
        # max of each of CENSUS_BUCKETS buckets of requests, so a long
        # session's page stays small (2 points a bucket at most).
        CENSUS_MAX_POINTS = 3000
        CENSUS_BUCKETS = 1000

        module_function

        def h(value)
          CGI.escapeHTML(value.to_s)
        end

        # @param report [Hash] a report from Analysis
        # @param sites [Boolean] leaks: the growing sites first, not the findings
        # @return [String] the page
        def render(report, sites: false)
          body = case report["command"]
                 when "leaks" then leaks(report, sites: sites)
                 when "summary" then summary(report)
                 when "diff" then diff(report)
                 else "<pre>#{h(JSON.pretty_generate(report))}</pre>"
                 end
          page("rack-objectspace #{report['command']}", body)
        end

        def page(title, body)
          <<~HTML
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>#{h(title)}</title>
            <style>
              body { font: 14px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #222; max-width: 1340px; }
              h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
              .sub { color: #666; margin-bottom: 16px; }
              table { border-collapse: collapse; margin: 8px 0; max-width: 100%; }
              td { overflow-wrap: break-word; }
              td.loc { max-width: 400px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
              td.ep { max-width: 320px; min-width: 110px; }
              td.cls { max-width: 220px; min-width: 70px; overflow-wrap: anywhere; }
              svg { max-width: 100%; height: auto; }
              th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
              th { background: #f6f6f6; font-weight: 600; }
              td.n { text-align: right; font-variant-numeric: tabular-nums; }
              td.loc { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
              .charts { display: flex; flex-wrap: wrap; gap: 16px; }
              .chart { border: 1px solid #e4e4e4; border-radius: 6px; padding: 8px; max-width: 100%; box-sizing: border-box; }
              .warn { color: #8a5a00; background: #fff7e0; padding: 6px 10px; border-radius: 4px; }
              .legend span { display: inline-block; margin-right: 14px; font-size: 12.5px; }
              .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
              tr.held td { border-bottom: 1px solid #e4e4e4; font-size: 12.5px; color: #444; padding-top: 0; }
              tr.held ul { margin: 4px 0; padding-left: 18px; } tr.held .holds { font-weight: 600; }
              tr.held .path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; overflow-wrap: anywhere; }
              tr.members td { font-size: 12.5px; color: #444; padding-top: 0; } tr.members table { margin: 2px 0 6px; }
            </style></head>
            <body>
            #{body}
            </body></html>
          HTML
        end

        def nice_max(v)
          return 1 if v <= 0

          mag = 10**Math.log10(v).floor
          [1, 2, 2.5, 5, 10].map { |m| m * mag }.find { |c| c >= v }
        end

        def fmt_axis(v, bytes)
          bytes ? Text.bytes(v) : (v >= 10_000 ? "#{(v / 1000.0).round(1)}k" : v.round(1).to_s.sub(/\.0\z/, ""))
        end

        # A line chart as inline SVG.
        # @param series [Array<Hash>] each {name:, xs:, ys:, color:}, and
        #   data: {name => values} written as data-* attributes of its line
        # @param steps [Boolean] each value holds until the next x (no dots)
        def line_chart(title, series, bytes: false, width: 540, height: 260, x_label: "request", steps: false)
          left = 70
          right = 16
          top = 28
          bottom = 40
          pw = width - left - right
          ph = height - top - bottom
          xs = series.flat_map { |s| s[:xs] }
          ys = series.flat_map { |s| s[:ys] }
          xmin = xs.min || 0
          xmax = xs.max || 1
          xmax = xmin + 1 if xmax == xmin
          ymax = nice_max(ys.max || 1)
          sx = ->(x) { left + (x - xmin) * pw.to_f / (xmax - xmin) }
          sy = ->(y) { top + ph - y * ph.to_f / ymax }
          svg = +%(<svg xmlns="http://www.w3.org/2000/svg" width="#{width}" height="#{height}" role="img" aria-label="#{h(title)}">)
          svg << %(<text x="#{left}" y="18" font-size="14" font-weight="600">#{h(title)}</text>)
          5.times do |i|
            v = ymax * i / 4.0
            y = sy.call(v).round(1)
            svg << %(<line x1="#{left}" y1="#{y}" x2="#{left + pw}" y2="#{y}" stroke="#eee"/>)
            svg << %(<text x="#{left - 6}" y="#{y + 4}" font-size="11" text-anchor="end" fill="#555">#{h(fmt_axis(v, bytes))}</text>)
          end
          ticks = [xmin, xmin + (xmax - xmin) / 2.0, xmax].map(&:round).uniq
          ticks.each do |t|
            x = sx.call(t).round(1)
            svg << %(<text x="#{x}" y="#{top + ph + 16}" font-size="11" text-anchor="middle" fill="#555">#{t}</text>)
          end
          svg << %(<text x="#{left + pw / 2}" y="#{height - 6}" font-size="11" text-anchor="middle" fill="#555">#{h(x_label)}</text>)
          svg << %(<line x1="#{left}" y1="#{top + ph}" x2="#{left + pw}" y2="#{top + ph}" stroke="#999"/>)
          svg << %(<line x1="#{left}" y1="#{top}" x2="#{left}" y2="#{top + ph}" stroke="#999"/>)
          series.each do |s|
            pts = s[:xs].zip(s[:ys]).each_with_index.flat_map do |(x, y), i|
              corner = steps && i.positive? ? ["#{sx.call(x).round(1)},#{sy.call(s[:ys][i - 1]).round(1)}"] : []
              corner + ["#{sx.call(x).round(1)},#{sy.call(y).round(1)}"]
            end
            data = (s[:data] || {}).map { |k, v| %( data-#{k}="#{h(Array(v).join(' '))}") }.join
            svg << %(<polyline fill="none" stroke="#{s[:color]}" stroke-width="#{steps ? 1.5 : 2}" points="#{pts.join(' ')}"#{data}><title>#{h(s[:name])}</title></polyline>)
            next if steps

            s[:xs].zip(s[:ys]).each do |x, y|
              svg << %(<circle cx="#{sx.call(x).round(1)}" cy="#{sy.call(y).round(1)}" r="2.5" fill="#{s[:color]}"><title>#{h(s[:name])} @ #{x}: #{h(bytes ? Text.bytes(y) : y)}</title></circle>)
            end
          end
          svg << "</svg>"
          %(<div class="chart">#{svg}</div>)
        end

        # Horizontal bars for the top rows of a table.
        def bar_chart(title, rows, value_key, bytes: false, width: 1100)
          rows = rows.first(12)
          return "" if rows.empty?

          label_w = 520
          bar_h = 20
          height = 34 + rows.size * (bar_h + 6)
          max = [rows.map { |r| r[value_key].to_f }.max, 1].max
          svg = +%(<svg xmlns="http://www.w3.org/2000/svg" width="#{width}" height="#{height}" role="img" aria-label="#{h(title)}">)
          svg << %(<text x="0" y="18" font-size="14" font-weight="600">#{h(title)}</text>)
          rows.each_with_index do |r, i|
            y = 30 + i * (bar_h + 6)
            w = ((width - label_w - 110) * r[value_key].to_f / max).round(1)
            label = "#{r['location']} #{r['type']}"
            label = "…#{label[-78..]}" if label.length > 80
            svg << %(<text x="#{label_w - 8}" y="#{y + 14}" font-size="11.5" text-anchor="end" font-family="monospace">#{h(label)}</text>)
            svg << %(<rect x="#{label_w}" y="#{y}" width="#{[w, 1].max}" height="#{bar_h}" fill="#{COLORS[i % COLORS.size]}"/>)
            value = bytes ? Text.bytes(r[value_key]) : Text.num(r[value_key])
            svg << %(<text x="#{label_w + w + 6}" y="#{y + 14}" font-size="11.5">#{h(value)}</text>)
          end
          svg << "</svg>"
          %(<div class="chart">#{svg}</div>)
        end

        def site_table(sites, extra = [])
          head = %w[# objects memsize type class gem location] + extra.map(&:first)
          rows = sites.each_with_index.map do |s, i|
            cells = [%(<td class="n">#{i + 1}</td>), %(<td class="n">#{Text.num(s['count'])}</td>),
                     %(<td class="n">#{h(Text.bytes(s['memsize']))}</td>), "<td>#{h(s['type'])}</td>",
                     %(<td class="cls">#{h(s['class'] || '-')}</td>), "<td>#{h(s['gem'] || '-')}</td>",
                     loc_cell(s)]
            cells += extra.map { |(name, fn)| name == "allocated by" ? %(<td class="ep">#{fn.call(s)}</td>) : "<td>#{fn.call(s)}</td>" }
            "<tr>#{cells.join}</tr>#{held_by_row(s, head.size)}"
          end
          "<table><tr>#{head.map { |c| "<th>#{h(c)}</th>" }.join}</tr>#{rows.join("\n")}</table>"
        end

        # A location cell: relative to the app or the gem, as in the text; the full path on hover.
        def loc_cell(site)
          %(<td class="loc" title="#{h(site['location'])}">#{h(Text.location(site))}</td>)
        end

        # A row under a site with what holds its objects (its held_by paths).
        def held_by_row(site, columns)
          paths = site["held_by"]
          return "" if paths.nil? || paths.empty?

          chains = Text.distinct_chains(paths.map { |p| [p.find { |step| step["holds"] }&.fetch("holds") || 0, p] })
          items = chains.map { |objects, path| chain_item(objects, path) }
          intro = "What holds them: #{Text.num(site['held_by_sampled'])} object(s) traced, " \
                  "shortest paths from a GC root in #{site['held_by_dump']}"
          %(<tr class="held"><td></td><td colspan="#{columns - 1}">#{h(intro)}<ul>#{items.join}</ul></td></tr>)
        end

        # One distinct chain: who holds how many, then its steps named by class and site.
        def chain_item(objects, path)
          holder = Text.path_holder(path)
          name = Text.chain_holder(path)
          steps = path.map do |step|
            label = h(Text.chain_label(step))
            step.equal?(holder) ? "<b>#{label}</b>" : label
          end
          %(<li><span class="holds">#{Text.num(objects)} held by #{h(name)}</span>) +
            %(<div class="path">#{steps.join(' &rarr; ')}</div></li>)
        end

        # The findings: one row a leak, its member sites and what holds it beneath.
        def finding_table(findings)
          head = ["#", "objects/request", "bytes/request", "live", "memsize", "sites", "leak (the app's line first)",
                  "held by", "allocated by"]
          rows = findings.each_with_index.map do |f, i|
            ep = (f["allocated_by"] || []).first(3).map { |e| h("#{e['method']} #{e['path']} (#{e['count']})") }.join("<br>")
            procs = f["processes"].size > 1 ? "<br>" + f["processes"].map { |p| h("#{p['pid']} #{format('%.2f', p['per_request'])}/req") }.join("<br>") : ""
            holder = f["holder"] ? h(Text.leak_holder_label(f["holder"])) : "-"
            cells = [%(<td class="n">#{i + 1}</td>), %(<td class="n">#{h(format('%.2f', f['per_request']))}#{procs}</td>),
                     %(<td class="n">#{h(Text.bytes(f['bytes_per_request']))}</td>), %(<td class="n">#{Text.num(f['count'])}</td>),
                     %(<td class="n">#{h(Text.bytes(f['memsize']))}</td>), %(<td class="n">#{f['sites'].size}</td>),
                     %(<td class="loc" title="#{h(f['headline']['location'])}">#{h("#{Text.location(f['headline'])} #{f['headline']['type']}")}</td>),
                     %(<td class="ep">#{holder}</td>), %(<td class="ep">#{ep.empty? ? '-' : ep}</td>)]
            "<tr>#{cells.join}</tr>#{members_row(f, head.size)}"
          end
          "<table><tr>#{head.map { |c| "<th>#{h(c)}</th>" }.join}</tr>#{rows.join("\n")}</table>"
        end

        # The member sites of a finding, and its distinct retention chains.
        def members_row(finding, columns)
          rows = finding["sites"].map do |s|
            procs = s["processes"].map { |p| "#{p['pid']} #{format('%.2f', p['per_request'])}/req" }.join(", ")
            %(<tr><td class="n">#{h(format('%.2f', s['per_request']))}</td><td class="n">#{Text.num(s['count'])}</td>) +
              %(<td class="n">#{h(Text.bytes(s['memsize']))}</td><td>#{h(s['type'])}</td><td class="cls">#{h(s['class'] || '-')}</td>) +
              %(#{loc_cell(s)}<td>#{h(procs)}</td></tr>)
          end
          sites = "<table><tr><th>objects/request</th><th>live</th><th>memsize</th><th>type</th><th>class</th>" \
                  "<th>location</th><th>processes</th></tr>#{rows.join}</table>"
          chains = Text.distinct_chains((finding["held_by"] || []).map { |c| [c["objects"], c["steps"]] })
          held = chains.empty? ? "" : "What holds them (distinct paths from a GC root)<ul>#{chains.map { |o, p| chain_item(o, p) }.join}</ul>"
          %(<tr class="members held"><td></td><td colspan="#{columns - 1}">#{sites}#{held}</td></tr>)
        end

        def group_table(title, groups)
          return "" if groups.nil? || groups.empty?

          rows = groups.map do |g|
            %(<tr><td class="n">#{Text.num(g['count'])}</td><td class="n">#{h(Text.bytes(g['memsize']))}</td><td class="loc">#{h(g['name'])}</td></tr>)
          end
          "<h2>#{h(title)}</h2><table><tr><th>objects</th><th>memsize</th><th>name</th></tr>#{rows.join}</table>"
        end

        def leaks(r, sites: false)
          out = +"<h1>Leaks</h1>"
          processes = r["processes"] || []
          findings = r["findings"]
          distinct = r["growing_sites"] || r["sites"].size
          what = findings ? "#{findings.size} leak(s) from #{distinct} growing site(s)" : "#{distinct} growing site(s)"
          out << %(<div class="sub">#{h(r['source'])}: #{h(what)} (#{h(Text.read(r, processes))})</div>)
          (r["warnings"] || []).each { |w| out << %(<p class="warn">#{h(w)}</p>) }
          if findings && !sites
            out << "<h2>Leaks (sites that grow together)</h2>"
            out << (findings.empty? ? "<p>No site keeps growing through the later half of the session.</p>" : finding_table(findings))
          end
          processes.each do |p|
            if p["census_requests"]
              out << "<h2>Process #{h(p['host'])}/#{h(p['pid'])}</h2>" << census_chart(r, p)
              next
            end
            xs = p["dumps"].each_with_index.map { |d, i| d["seq"] || i }
            out << "<h2>Process #{h(p['host'])}/#{h(p['pid'])}</h2><div class=\"charts\">"
            out << line_chart("Live objects per request", [{ name: "live objects", xs: xs, ys: p["dumps"].map { |d| d["objects"].to_i }, color: "#1f77b4" }])
            out << line_chart("Memsize per request", [{ name: "memsize", xs: xs, ys: p["dumps"].map { |d| d["memsize"].to_i }, color: "#2ca02c" }], bytes: true)
            top = r["sites"].select { |s| s["host"] == p["host"] && s["pid"] == p["pid"] }.first(6)
            unless top.empty?
              series = top.each_with_index.map do |s, i|
                { name: "#{Text.location(s)} #{s['type']}", xs: xs, ys: s["series"], color: COLORS[i % COLORS.size] }
              end
              out << line_chart("Top growing sites: live objects", series, width: 1096, height: 300)
              out << legend(series)
            end
            out << "</div>"
          end
          out << "<h2>Growing sites (one row a site and process)</h2>"
          if r["sites"].empty?
            out << "<p>No site keeps growing through the later half of the session.</p>"
          else
            endpoints = lambda do |s|
              (s["allocated_by"] || []).first(3).map { |e| h("#{e['method']} #{e['path']} (#{e['count']})") }.join("<br>")
            end
            extra = [["objects/request", ->(s) { h(format('%.2f', s['per_request'])) }],
                     ["growth", ->(s) { "+#{Text.num(s['growth'])}" }],
                     ["allocated by", endpoints]]
            extra.unshift(["pid", ->(s) { h(s["pid"]) }]) if processes.size > 1
            out << site_table(r["sites"], extra)
          end
          out
        end

        def legend(series)
          %(<div class="legend" style="width:100%">) +
            series.map { |s| %(<span><i style="background:#{s[:color]}"></i>#{h(s[:name])}</span>) }.join + "</div>"
        end

        # The census of one process: live objects of its top sites at every
        # request (a count holds from one GC to the next), one line a site.
        def census_chart(report, process)
          last = process["census_requests"].to_i
          sites = report["sites"].select do |s|
            s["host"] == process["host"] && s["pid"] == process["pid"] && s["census_steps"]&.any?
          end.first(6)
          return %(<p>No growing site in this process's census of #{Text.num(last)} requests.</p>) if sites.empty?

          thinned = false
          series = sites.each_with_index.map do |s, i|
            steps = s["census_steps"]
            if steps.size > CENSUS_MAX_POINTS
              steps = min_max_buckets(steps)
              thinned = true
            end
            # The last count holds to the last request.
            drawn = steps[-1][0] < last ? steps + [[last, steps[-1][1]]] : steps
            { name: "#{Text.location(s)} #{s['type']}", xs: drawn.map(&:first), ys: drawn.map(&:last),
              color: COLORS[i % COLORS.size],
              data: { "site" => "#{s['location']} #{s['type']}", "requests" => steps.map(&:first),
                      "objects" => steps.map(&:last) } }
          end
          out = +%(<div class="charts census" data-host="#{h(process['host'])}" data-pid="#{h(process['pid'])}" ) +
                 %(data-last-request="#{last}" data-downsampled="#{thinned}">)
          out << line_chart("Census: live objects of the top sites over requests", series, width: 1096, height: 320,
                                                                                          steps: true)
          out << legend(series)
          note = "Every request of this process's census (#{Text.num(last)} requests): a count is exact at each GC and holds until the next."
          if thinned
            note += " Series of more than #{Text.num(CENSUS_MAX_POINTS)} counts are downsampled: the lowest and the highest " \
                    "count of each of #{Text.num(CENSUS_BUCKETS)} equal spans of requests."
          end
          out << %(<p class="sub" style="width:100%">#{h(note)}</p></div>)
        end

        # Steps [[requests, count], ...] cut to the lowest and the highest
        # count (in request order) of each of CENSUS_BUCKETS equal spans, and
        # the last count (it holds to the end).
        def min_max_buckets(steps)
          first = steps[0][0]
          span = [(steps[-1][0] - first + 1).fdiv(CENSUS_BUCKETS), 1].max
          kept = steps.chunk_while { |a, b| ((a[0] - first) / span).floor == ((b[0] - first) / span).floor }
                      .flat_map { |bucket| [bucket.min_by(&:last), bucket.max_by(&:last)].uniq.sort_by(&:first) }
          kept[-1] == steps[-1] ? kept : kept << steps[-1]
        end

        def summary(r)
          out = +"<h1>Heap summary</h1>"
          out << %(<div class="sub">#{h(r['source'])}: #{Text.num(r['objects'])} objects, #{h(Text.bytes(r['memsize']))}</div>)
          out << bar_chart("Top allocation sites by memsize", r["sites"], "memsize", bytes: true)
          out << "<h2>Sites</h2>" << site_table(r["sites"])
          out << group_table("By type", r["by_type"]) << group_table("By class", r["by_class"])
          out << group_table("By gem", r["by_gem"]) << group_table("By file", r["by_file"])
          out
        end

        def diff(r)
          before, after, retained = r["inputs"]
          out = +"<h1>Retained objects</h1>"
          out << %(<div class="sub">#{Text.num(r['objects'])} objects (#{h(Text.bytes(r['memsize']))}) in #{h(after)}, ) +
                 %(not in #{h(before)}, still in #{h(retained)}</div>)
          out << bar_chart("Top retaining sites by objects", r["sites"], "count")
          out << "<h2>Sites</h2>" << site_table(r["sites"])
          out << group_table("By gem", r["by_gem"]) << group_table("By class", r["by_class"])
          out
        end
      end
    end
  end
end
