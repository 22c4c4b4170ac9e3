# frozen_string_literal: true

module Rack
  class Objectspace
    module Analysis
      # Plain-text tables for the CLI.
      module Text
        module_function

        # @param report [Hash] a report from Analysis
        # @param width [Integer, nil] the terminal's columns: longer lines are cut to fit
        # @return [String]
        def render(report, width: nil)
          text = case report["command"]
                 when "summary" then summary(report)
                 when "diff" then diff(report)
                 when "leaks" then leaks(report)
                 when "ls" then ls(report)
                 else JSON.pretty_generate(report)
                 end
          fit(text, width)
        end

        # Cuts every line longer than `width` to it, ending in "~".
        def fit(text, width)
          return text unless width && width > 20

          text.each_line.map do |line|
            body = line.chomp
            cut = body.length > width ? "#{body[0, width - 1]}~" : body
            line.end_with?("\n") ? "#{cut}\n" : cut
          end.join
        end

        # A file as a table shows it: `gem-name/path/in/the/gem.rb` for a gem's
        # files, `ruby/set.rb` for Ruby's own library, the app's files relative
        # to the current folder. JSON keeps the full path.
        def short_path(file, gem = nil)
          return file if file.nil? || file.empty?

          if (m = %r{.*/gems/([^/]+)/(.+)\z}.match(file)) && !m[1].match?(/\A\d/)
            name = gem && !%w[app ruby].include?(gem) ? gem : m[1]
            return "#{name}/#{m[2]}"
          end
          if (m = %r{/(?:vendor_ruby|site_ruby)/(?:\d[^/]*/)?(.+)\z}.match(file))
            return m[1]
          end
          return "ruby/#{m[1]}" if (m = %r{/lib/ruby/\d[^/]*/(.+)\z}.match(file))

          cwd = "#{Dir.pwd}/"
          file.start_with?(cwd) ? file.delete_prefix(cwd) : file
        end

        def location(site)
          return site["location"] unless site["file"]

          "#{short_path(site['file'], site['gem'])}:#{site['line']}"
        end

        def bytes(n)
          n = n.to_i
          return "#{n} B" if n < 1000

          units = %w[kB MB GB TB]
          value = n.to_f
          unit = nil
          units.each do |u|
            value /= 1000.0
            unit = u
            break if value < 1000
          end
          format("%.1f %s", value, unit)
        end

        def num(n)
          n.to_i.to_s.reverse.scan(/\d{1,3}/).join(",").reverse.then { |s| n.to_i.negative? ? "-#{s}" : s }
        end

        def table(headers, rows, right: [])
          widths = headers.each_index.map { |i| ([headers[i]] + rows.map { |r| r[i].to_s }).map(&:length).max }
          line = lambda do |cells|
            cells.each_with_index.map do |c, i|
              i == cells.size - 1 ? c.to_s : (right.include?(i) ? c.to_s.rjust(widths[i]) : c.to_s.ljust(widths[i]))
            end.join("  ").rstrip
          end
          ([line.call(headers)] + rows.map { |r| line.call(r) }).map { |l| "  #{l}" }.join("\n")
        end

        def site_rows(sites)
          sites.each_with_index.map do |s, i|
            [i + 1, num(s["count"]), bytes(s["memsize"]), s["type"], s["class"] || "-", location(s)]
          end
        end

        def groups(report, key, title)
          rows = (report[key] || []).map { |g| [num(g["count"]), bytes(g["memsize"]), g["name"]] }
          return "" if rows.empty?

          "\n#{title}\n#{table(%w[objects memsize name], rows, right: [0, 1])}\n"
        end

        def summary(r)
          out = +"#{r['source']}: #{num(r['objects'])} objects, #{bytes(r['memsize'])} " \
                  "(#{num(r['lines'])} lines, #{bytes(r['bytes'])} of JSON, #{r['elapsed_ms']} ms)\n"
          out << "#{num(r['lossy_strings'])} strings read lossily (invalid escapes or UTF-8)\n" if r["lossy_strings"].to_i.positive?
          out << "\nTop allocation sites by memsize\n"
          out << table(%w[# objects memsize type class location], site_rows(r["sites"]), right: [0, 1, 2]) << "\n"
          out << groups(r, "by_type", "By type")
          out << groups(r, "by_class", "By class")
          out << groups(r, "by_gem", "By gem")
          out << groups(r, "by_file", "By file")
          out
        end

        def diff(r)
          before, after, retained = r["inputs"]
          out = +"Retained: #{num(r['objects'])} objects, #{bytes(r['memsize'])} in #{after}, " \
                  "not in #{before}, still in #{retained}\n\n"
          if r["sites"].empty?
            out << "  (no retained objects)\n"
          else
            out << table(%w[# objects memsize type class location], site_rows(r["sites"]), right: [0, 1, 2]) << "\n"
          end
          out << held_by(r["sites"])
          out << groups(r, "by_gem", "By gem")
          out
        end

        def leaks(r)
          processes = r["processes"] || []
          out = +"Leaks in #{r['source']}: #{r['sites'].size} growing site(s) (#{read(r, processes)})\n\n"
          if r["sites"].empty?
            out << "  No site keeps growing through the later half of the session.\n"
          else
            rows = r["sites"].each_with_index.map do |s, i|
              endpoints = (s["allocated_by"] || []).first(2).map { |e| "#{e['method']} #{e['path']} (#{e['count']})".strip }.join(", ")
              [i + 1, format("%.2f", s["per_request"]), num(s["count"]), bytes(s["memsize"]),
               "+#{num(s['growth'])}", s["type"], s["class"] || "-", location(s), endpoints.empty? ? "-" : endpoints]
            end
            out << table(["#", "objects/req", "live", "memsize", "growth", "type", "class", "location", "allocated by"],
                         rows, right: [0, 1, 2, 3, 4]) << "\n"
          end
          out << called_from(r["sites"])
          out << held_by(r["sites"])
          hidden = r["hidden_sites"].to_i
          if hidden.positive?
            out << "\n#{hidden} growing site(s) under the noise floor (< #{NOISE_PER_REQUEST} objects/request or " \
                   "< #{NOISE_OBJECTS} live objects) not shown; --all shows them.\n"
          end
          processes.each do |p|
            if p["census_requests"]
              out << "\nprocess #{p['host']}/#{p['pid']}: census of #{p['census_requests']} requests, " \
                     "#{p['census_gcs']} GCs observed"
              next
            end
            series = p["dumps"].map { |d| d["objects"] }
            out << "\nprocess #{p['host']}/#{p['pid']}: #{p['dumps'].size} dumps, live objects #{series.first || 0} -> #{series.last || 0}"
            out << ", #{p['skipped'].size} skipped" unless p["skipped"].empty?
            out << ", #{p['missing_dumps']} missing (gaps in seq: dropped or failed)" if p["missing_dumps"].to_i.positive?
          end
          out << "\n" << warnings(r)
        end

        # What made the report partial (missing batches, dropped points, a full
        # site table, skipped dumps): in the report itself, after the figures.
        def warnings(r)
          list = r["warnings"] || []
          return "" if list.empty?

          "\nWarnings:\n" + list.map { |w| "  - #{w}\n" }.join
        end

        # What the leaks header says was read: processes, the census's requests
        # and the dumps (those the census report read for what holds them too).
        def read(r, processes)
          census = processes.sum { |p| p["census_requests"].to_i }
          dumps = processes.sum { |p| p["dumps"].size }
          missing = processes.sum { |p| p["missing_dumps"].to_i }
          held = r["sites"].filter_map { |s| s["held_by_dump"] }.uniq.size
          parts = ["#{processes.size} process(es)"]
          parts << "census of #{census} requests" if census.positive?
          parts << "#{dumps} dump(s) read" if dumps.positive? || census.zero?
          parts << "#{missing} missing" if missing.positive?
          parts << "#{held} dump(s) read for what holds them" if held.positive? && dumps.zero?
          parts.join(", ")
        end

        # The app's lines that lead to sites in a gem or Ruby's library (from
        # the census's sampled stacks): the line to change.
        def called_from(sites)
          called = sites.each_with_index.select { |s, _| s["called_from"] && !s["called_from"].empty? }
          return "" if called.empty?

          out = +"\nThe app's line (sampled stacks of allocations in a library)\n"
          called.each do |s, i|
            total = s["called_from"].sum { |c| c["samples"].to_i }
            lines = s["called_from"].map { |c| "#{short_path(c['file'])}:#{c['line']} (#{num(c['samples'])} of #{num(total)})" }
            out << "  ##{i + 1} #{location(s)} <- #{lines.join(', ')}\n"
          end
          out
        end

        # What holds each site's objects: its held_by paths, most objects first.
        def held_by(sites)
          traced = sites.each_with_index.select { |s, _| s["held_by"] && !s["held_by"].empty? }
          return "" if traced.empty?

          out = +"\nWhat holds them (shortest paths from a GC root, in #{traced.first.first['held_by_dump']})\n"
          traced.each do |s, i|
            out << "\n  ##{i + 1} #{location(s)} #{s['type']}: #{num(s['held_by_sampled'])} object(s) traced\n"
            s["held_by"].each do |path|
              holder = path.find { |step| step["holds"] }
              out << "    #{num(holder ? holder['holds'] : 0)} held by #{holder_label(holder)}\n" if holder
              out << "      #{path.map { |step| step_label(step) }.join(' -> ')}\n"
            end
          end
          if traced.any? { |s, _| s["held_by"].any? { |path| path.first["outside_dump"] } }
            out << "\n  Paths from \"outside the dump\" start at objects nothing in the dump refers to: a retained dump\n" \
                   "  lacks the older objects that hold them. Take a full dump (dump: :full) for paths from the roots.\n"
          end
          out
        end

        # One step of a path: "root (vm)", "Audit (MODULE)", "Array 0x7f.. (app/a.rb:3, 88 B)".
        def step_label(step)
          case step["type"]
          when "ROOT" then "root (#{step['name']})"
          when "OUTSIDE" then "(#{step['name']})"
          when "ELIDED" then "... #{num(step['elided'])} steps ..."
          else
            return "#{step['name'] || 'anonymous'} (#{step['type']})" if %w[CLASS MODULE].include?(step["type"])

            where = step["file"] ? "#{short_path(step['file'])}:#{step['line']}, " : ""
            "#{kind(step)} #{step['address']} (#{where}#{bytes(step['memsize'])})"
          end
        end

        # The holder of a path, without its address: "Audit (MODULE)", "Array at app/a.rb:3", "root (vm)".
        def holder_label(step)
          return step_label(step) unless step["address"]
          return step_label(step) if %w[CLASS MODULE].include?(step["type"])

          "#{kind(step)} at #{short_path(step['file'])}:#{step['line']}"
        end

        # An object's class name, or its type for internal objects (IMEMO, ICLASS) and unnamed classes.
        def kind(step)
          %w[IMEMO ICLASS].include?(step["type"]) ? step["type"] : (step["class"] || step["type"])
        end

        def ls(r)
          rows = r["dumps"].map do |d|
            [d["host"], d["pid"], d["seq"] || "-", d["requests"] || "-", "#{d['method']} #{d['path']}".strip,
             d["status"] || "-", d["dump"] || "-", d["objects"] ? num(d["objects"]) : "-", bytes(d["size"]), d["key"]]
          end
          out = +"#{r['dumps'].size} dump(s) in #{r['source']}\n\n"
          out << table(%w[host pid seq requests request status dump objects stored key], rows,
                       right: [1, 2, 3, 7, 8]) << "\n"
          (r["processes"] || []).each do |p|
            next unless p["missing_dumps"].to_i.positive?

            out << "\nprocess #{p['host']}/#{p['pid']}: #{p['missing_dumps']} dump(s) missing " \
                   "(gaps in seq: dropped or failed)"
          end
          out << "\n" if (r["processes"] || []).any? { |p| p["missing_dumps"].to_i.positive? }
          unless r["dumps"].empty?
            out << "\nKeys are relative to the source: rack-objectspace diff #{r['source']} KEY1 KEY2 KEY3\n"
          end
          out
        end
      end
    end
  end
end
