# frozen_string_literal: true

module Rack
  class Objectspace
    module Analysis
      # Plain-text tables for the CLI.
      module Text
        module_function

        # @param report [Hash] a report from Analysis
        # @param width [Integer, nil] the terminal's columns: longer lines are cut to fit
        # @param sites [Boolean] leaks: one row a growing site of a process, not one finding a leak
        # @return [String]
        def render(report, width: nil, sites: false)
          text = case report["command"]
                 when "summary" then summary(report)
                 when "diff" then diff(report)
                 when "leaks" then leaks(report, sites: sites, width: width)
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
            name = gem && !%w[app ruby].include?(gem) ? gem : m[1].sub(/-(?:\d|\h{7,}\z).*\z/, "")
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

        # The leaks: one finding a leak (the sites that grow together), or
        # with `sites: true` one row a growing site of a process.
        def leaks(r, sites: false, width: nil)
          processes = r["processes"] || []
          findings = r["findings"]
          return leak_sites(r, processes, width) if sites || findings.nil?

          distinct = r["growing_sites"] || r["sites"].size
          out = +"Leaks in #{r['source']}: #{findings.size} leak(s) from #{distinct} growing site(s) " \
                 "(#{read(r, processes)})\n\n"
          if findings.empty?
            out << "  No site keeps growing through the later half of the session.\n"
          else
            rows = findings.each_with_index.map do |f, i|
              [i + 1, format("%.2f", f["per_request"]), bytes(f["bytes_per_request"]), num(f["count"]),
               bytes(f["memsize"]), f["sites"].size, leak_cell(f),
               endpoints(f["allocated_by"], 2)]
            end
            out << table(["#", "objects/req", "bytes/req", "live", "memsize", "sites", "leak (the app's line first)",
                          "allocated by"], rows, right: [0, 1, 2, 3, 4, 5]) << "\n"
            findings.each_with_index { |f, i| out << finding(f, i + 1, processes.size, width) }
          end
          out << finding_paths(findings, r["sites"], width)
          out << "\nEach leak groups the sites that grow together; --sites lists them one row a site and process.\n" \
            unless findings.empty?
          out << footer(r, processes)
        end

        # The summary table's leak: the app's line behind a library's sites
        # when the census sampled it, else the headline site.
        def leak_cell(f)
          line = f["app_line"]
          return "#{location(f['headline'])} #{f['headline']['type']}" unless line

          "#{short_path(line['file'])}:#{line['line']} (calls #{line['via']['gem'] || 'a library'})"
        end

        # One finding: its headline, its holder, its processes and its sites.
        def finding(f, rank, nprocesses, width)
          head = f["headline"]
          more = f["sites"].size - 1
          out = +"\n##{rank} #{location(head)} #{head['type']}#{head['class'] ? " (#{head['class']})" : ''}"
          out << (head["gem"] == "app" && !f["app_line"] ? ", the app's line" : "")
          out << (more.positive? ? ", and #{more} more site(s) growing with it" : "") << "\n"
          if (line = f["app_line"])
            out << "   the app's line: #{short_path(line['file'])}:#{line['line']}, #{num(line['samples'])} of " \
                   "#{num(line['of'])} sampled live objects (calls #{location(line['via'])})\n"
          end
          out << wrapped("   held by ", leak_holder_label(f["holder"]).split(/(?= in )/, 2), width) if f["holder"]
          out << "   allocated by #{endpoints(f['allocated_by'], 6)}\n" if f["allocated_by"].size > 2
          if nprocesses > 1 || f["processes"].size > 1
            per = f["processes"].first(6).map { |p| "#{p['pid']} #{format('%.2f', p['per_request'])}/req" }
            per << "+#{f['processes'].size - 6} more" if f["processes"].size > 6
            per = per.join(", ")
            out << "   in #{f['processes'].size} process(es): #{per}\n"
          end
          many = f["processes"].size > 1
          return out if f["sites"].size == 1 && !many

          shown = f["sites"].first(MEMBERS_SHOWN)
          rows = shown.map do |s|
            [format("%.2f", s["per_request"]), num(s["count"]), bytes(s["memsize"]), location(s), s["type"],
             *(many ? [s["processes"].map { |p| p["pid"] }.join(" ")] : []), s["class"] || "-"]
          end
          headers = %w[objects/req live memsize location type] + (many ? %w[pids] : []) + %w[class]
          out << table(headers, rows, right: [0, 1, 2]).gsub(/^  /, "   ") << "\n"
          out << "   ... #{f['sites'].size - shown.size} more site(s) (--format json lists them all)\n" if f["sites"].size > shown.size
          out
        end

        # `prefix` and the parts on one line, or, when it would be longer than
        # `width` (PATH_WIDTH for a file or a pipe), a part a line under it.
        def wrapped(prefix, parts, width)
          room = width && width > 40 ? width : PATH_WIDTH
          line = prefix + parts.join
          return "#{line}\n" if line.length <= room

          pad = " " * prefix.length
          "#{prefix}#{parts.first}\n" + parts.drop(1).map { |p| "#{pad}#{p.strip}\n" }.join
        end

        # Member sites shown per finding in text.
        MEMBERS_SHOWN = 8

        def endpoints(list, n)
          shown = (list || []).first(n).map { |e| "#{e['method']} #{e['path']} (#{e['count']})".strip }
          shown << "+#{list.size - n} more" if list && list.size > n
          shown.empty? ? "-" : shown.join(", ")
        end

        # The holder that matters, with the class or module it lives in.
        def leak_holder_label(holder)
          label = holder_label(holder["step"])
          within = holder["within"]
          within && within != holder["step"] ? "#{label} in #{step_label(within)}" : label
        end

        # Today's view: one row a growing site of a process.
        def leak_sites(r, processes, width)
          distinct = r["growing_sites"] || r["sites"].size
          pids = processes.size > 1
          out = +"Leaks in #{r['source']}: #{distinct} growing site(s) (#{read(r, processes)})\n\n"
          if r["sites"].empty?
            out << "  No site keeps growing through the later half of the session.\n"
          else
            rows = r["sites"].each_with_index.map do |s, i|
              [i + 1, *(pids ? [s["pid"]] : []), format("%.2f", s["per_request"]), num(s["count"]), bytes(s["memsize"]),
               "+#{num(s['growth'])}", s["type"], s["class"] || "-", location(s), endpoints(s["allocated_by"], 2)]
            end
            headers = ["#", *(pids ? ["pid"] : []), "objects/req", "live", "memsize", "growth", "type", "class",
                       "location", "allocated by"]
            out << table(headers, rows, right: (0..(pids ? 5 : 4)).to_a) << "\n"
          end
          out << called_from(r["sites"])
          out << held_by(r["sites"], width: width)
          out << footer(r, processes)
        end

        def footer(r, processes)
          out = +""
          hidden = r["hidden_sites"].to_i
          if hidden.positive?
            out << "\n#{hidden} growing site(s) under the noise floor (< #{NOISE_PER_REQUEST} objects/request or " \
                   "< #{NOISE_OBJECTS} live objects) not shown; --all shows them.\n"
          end
          processes.each do |p|
            if p["census_requests"]
              out << "\nprocess #{p['host']}/#{p['pid']}: census of #{p['census_requests']} requests, " \
                     "#{p['census_gcs']} GCs observed"
              out << ", sampled 1 in #{p['census_sample']} (counts scaled, see the note below)" if p["census_sample"]
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

        # Columns a path may take when the report goes to a file or a pipe.
        PATH_WIDTH = 120

        # What holds each site's objects: each distinct chain of its held_by
        # paths once (addresses aside), with how many traced objects follow it.
        def held_by(sites, width: nil)
          traced = sites.each_with_index.select { |s, _| s["held_by"] && !s["held_by"].empty? }
          return "" if traced.empty?

          out = +"\nWhat holds them (shortest paths from a GC root, in #{traced.first.first['held_by_dump']})\n"
          traced.each do |s, i|
            out << "\n  ##{i + 1} #{location(s)} #{s['type']}: #{num(s['held_by_sampled'])} object(s) traced\n"
            chains = distinct_chains(s["held_by"].map { |p| [p.find { |step| step["holds"] }&.fetch("holds") || 0, p] })
            chains.group_by { |_, path| chain_holder(path) }.each do |holder, group|
              out << wrapped("    #{num(group.sum(&:first))} held by ", holder.split(/(?= in )/, 2), width)
              group.each { |objects, path| out << chain_line(objects, path, width) }
            end
          end
          out << outside_note if traced.any? { |s, _| s["held_by"].any? { |path| path.first["outside_dump"] } }
          out
        end

        # What holds each finding: its distinct chains, most objects first.
        def finding_paths(findings, sites, width)
          traced = findings.each_with_index.reject { |f, _| (f["held_by"] || []).empty? }
          return "" if traced.empty?

          dump = sites.filter_map { |s| s["held_by_dump"] }.first
          out = +"\nWhat holds them (shortest paths from a GC root#{dump ? ", in #{dump}" : ''})\n"
          traced.each do |f, i|
            chains = distinct_chains(f["held_by"].map { |c| [c["objects"], c["steps"]] })
            out << "\n  ##{i + 1} #{location(f['headline'])} #{f['headline']['type']}: " \
                   "#{chains.size} distinct path(s)\n"
            chains.group_by { |_, path| chain_holder(path) }.each do |holder, group|
              out << wrapped("    #{num(group.sum(&:first))} held by ", holder.split(/(?= in )/, 2), width)
              group.first(CHAINS_SHOWN).each { |objects, path| out << chain_line(objects, path, width) }
              out << "      ... #{group.size - CHAINS_SHOWN} more path(s) (--format json has every path in full)\n" if group.size > CHAINS_SHOWN
            end
          end
          out << outside_note if traced.any? { |f, _| f["held_by"].any? { |c| c["steps"].first["outside_dump"] } }
          out
        end

        CHAINS_SHOWN = 3

        def outside_note
          "\n  Paths from \"outside the dump\" start at objects nothing in the dump refers to: a retained dump\n" \
            "  lacks the older objects that hold them. Take a full dump (dump: :full) for paths from the roots.\n"
        end

        # [[objects, path]] merged by the path's shape (its steps' type, class,
        # name and site; not addresses), most objects first.
        def distinct_chains(pairs)
          merged = {}
          pairs.each do |objects, path|
            key = path.map { |step| step.values_at("type", "class", "name", "file", "line", "elided") }
            if merged[key]
              merged[key][0] += objects.to_i
            else
              merged[key] = [objects.to_i, path]
            end
          end
          merged.values.sort_by { |objects, _| -objects }
        end

        # The holder of a chain as its summary line names it: the holder that
        # matters (else the nearest named one), with the class or module it is in.
        def chain_holder(path)
          holder = path_holder(path)
          return "-" unless holder

          within = within_step(path, holder)
          within ? "#{holder_label(holder)} in #{step_label(within)}" : holder_label(holder)
        end

        def path_holder(path)
          path.find { |step| step["leak_holder"] } || path.find { |step| step["holds"] }
        end

        # A chain on one line: the objects that follow it, then its steps, the
        # middle elided to fit `width` (PATH_WIDTH for a file or a pipe).
        def chain_line(objects, path, width)
          indent = "      "
          count = "#{num(objects)}: "
          room = (width && width > 40 ? width : PATH_WIDTH) - indent.size - count.size
          "#{indent}#{count}#{elide(path, path_holder(path), room)}\n"
        end

        # The nearest CLASS or MODULE above the holder on its path.
        def within_step(path, holder)
          return nil unless holder && !%w[CLASS MODULE].include?(holder["type"])

          at = path.index { |step| step.equal?(holder) }
          path[0...at].reverse.find { |step| %w[CLASS MODULE].include?(step["type"]) }
        end

        # Steps of a path joined by " -> ", named by class and site; when
        # longer than `room`, runs of middle steps become "... N ...": the
        # root, the holder, the first object after it and the last stay.
        def elide(path, holder, room)
          labels = path.map { |step| chain_label(step) }
          line = labels.join(" -> ")
          return line if line.length <= room

          last = labels.size - 1
          at = holder ? path.index { |step| step.equal?(holder) } : nil
          keep = [0, last, at, at && at + 1].compact.select { |i| i <= last }.uniq
          candidates = (0..last).reject { |i| keep.include?(i) }.sort_by { |i| [keep.map { |k| (k - i).abs }.min, i] }
          render = lambda do |kept|
            elided(path, labels, kept)
          end
          # Too long even so: namespaces cut to their last two names, then
          # the object after the holder left out.
          if render.call(keep).length > room
            labels = path.map { |step| chain_label(step, short: true) }
            keep -= [at + 1] if at && render.call(keep).length > room
          end
          candidates.each do |i|
            trial = keep + [i]
            keep = trial if render.call(trial).length <= room
          end
          render.call(keep)
        end

        # The steps `kept` of a path, runs of the others as "... N ...".
        def elided(path, labels, kept)
          parts = []
          skipped = 0
          labels.each_with_index do |label, i|
            if kept.include?(i)
              parts << "... #{skipped} ..." if skipped.positive?
              skipped = 0
              parts << label
            else
              skipped += path[i]["elided"] ? path[i]["elided"].to_i : 1
            end
          end
          parts.join(" -> ")
        end

        # A step as a chain shows it: "Array (app/a.rb:3)", "Audit (MODULE)", "root (vm)".
        # With `short`, a namespaced class keeps its last two names ("Subscribers::Timed").
        def chain_label(step, short: false)
          return step_label(step) unless step["address"]
          return step_label(step) if %w[CLASS MODULE].include?(step["type"])

          name = kind(step)
          name = name.split("::").last(2).join("::") if short
          step["file"] ? "#{name} (#{::File.basename(step['file'])}:#{step['line']})" : name
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
          return kind(step) unless step["file"]

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
