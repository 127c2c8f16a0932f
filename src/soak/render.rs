//! Renders a [`Report`] as Markdown plus SVG pictures (hand-written SVG, no plotting dependency).

use std::fmt::Write;

use super::report::Report;
use crate::manifest::human_bytes;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The per-minute timeline: slots captured (green) and not (red) per minute, chain down (grey) and
/// outages (orange) as bands, injected faults (blue ticks), SIGKILLs (black marks), gaps by kind.
pub fn timeline_svg(r: &Report) -> String {
    let n = r.minutes.len().max(1);
    let bw = (900.0 / n as f64).clamp(1.0, 12.0);
    let w = (120.0 + bw * n as f64 + 20.0).max(900.0);
    let (top, h) = (30.0, 160.0);
    let gap_kinds: Vec<String> = {
        let mut k: Vec<String> = r.minutes.iter().flat_map(|m| m.gaps.keys().cloned()).collect();
        k.sort();
        k.dedup();
        k
    };
    let gh = 14.0;
    let total_h = top + h + 40.0 + gh * gap_kinds.len() as f64 + 50.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{total_h:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"18\" font-size=\"13\">{} — slots captured per minute (chain clock), faults, SIGKILLs, outages</text>\n",
        esc(&r.label)
    );
    let max = r.minutes.iter().map(|m| m.scheduled).max().unwrap_or(1).max(1) as f64;
    for (i, m) in r.minutes.iter().enumerate() {
        let x = 120.0 + bw * i as f64;
        if m.chain_down {
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{top}\" width=\"{bw:.1}\" height=\"{h}\" fill=\"#ddd\"/>");
        }
        if m.outage {
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{top}\" width=\"{bw:.1}\" height=\"{h}\" fill=\"#fdd9a0\"/>");
        }
        let ok = h * m.captured as f64 / max;
        let miss = h * (m.scheduled - m.captured) as f64 / max;
        let _ = writeln!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ok:.1}\" fill=\"#3a3\"/>",
            top + h - ok,
            (bw - 0.3).max(0.7)
        );
        if miss > 0.0 {
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{miss:.1}\" fill=\"#d33\"/>",
                top + h - ok - miss,
                (bw - 0.3).max(0.7)
            );
        }
        if m.faults > 0 {
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"{:.1}\" height=\"6\" fill=\"#36c\"/>",
                top - 8.0,
                bw.max(1.0)
            );
        }
        if m.kills > 0 {
            let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\">✕</text>", top + h + 12.0);
        }
        for (j, k) in gap_kinds.iter().enumerate() {
            if let Some(c) = m.gaps.get(k) {
                let y = top + h + 24.0 + gh * j as f64;
                let o = (0.25 + (*c as f64).ln_1p() / 5.0).min(1.0);
                let _ = writeln!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"#a3c\" fill-opacity=\"{o:.2}\"/>",
                    bw.max(1.0),
                    gh - 3.0
                );
            }
        }
    }
    let _ = writeln!(s, "<text x=\"10\" y=\"{}\">slots/min</text>", top + 12.0);
    let _ = writeln!(s, "<text x=\"10\" y=\"{}\">max {max:.0}</text>", top + 26.0);
    let _ = writeln!(s, "<text x=\"10\" y=\"{}\">SIGKILL ✕</text>", top + h + 12.0);
    for (j, k) in gap_kinds.iter().enumerate() {
        let _ = writeln!(s, "<text x=\"10\" y=\"{:.0}\">gap {}</text>", top + h + 34.0 + gh * j as f64, esc(k));
    }
    let ly = total_h - 14.0;
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"{ly}\"><tspan fill=\"#3a3\">■ captured</tspan>  <tspan fill=\"#d33\">■ not captured</tspan>  \
         <tspan fill=\"#999\">■ chain down</tspan>  <tspan fill=\"#e90\">■ venue outage</tspan>  \
         <tspan fill=\"#36c\">■ injected fault</tspan>  first minute {}, {} minutes of pm-books slot due times</text>",
        r.minutes.first().map(|m| crate::clock::from_unix(m.minute * 60).map(crate::clock::fmt_secs).unwrap_or_default()).unwrap_or_default(),
        r.minutes.len()
    );
    s.push_str("</svg>\n");
    s
}

/// The receive-latency histogram (our receive time − the book's `timestamp`).
pub fn latency_svg(r: &Report) -> String {
    let h = &r.latency.histogram;
    let n = h.len().max(1);
    let (bw, top, ht) = (50.0, 30.0, 160.0);
    let w = 60.0 + bw * n as f64 + 20.0;
    let max = h.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"18\" font-size=\"13\">{} — receive latency (ms), {} books; p50 {:.1}, p99 {:.1}</text>\n",
        top + ht + 50.0,
        esc(&r.label),
        r.latency.n,
        r.latency.p50_ms,
        r.latency.p99_ms
    );
    for (i, (b, c)) in h.iter().enumerate() {
        let x = 60.0 + bw * i as f64;
        let bh = ht * *c as f64 / max;
        let _ = writeln!(
            s,
            "<rect x=\"{x:.0}\" y=\"{:.1}\" width=\"{:.0}\" height=\"{bh:.1}\" fill=\"#36c\"/>\n<text x=\"{:.0}\" y=\"{:.1}\" font-size=\"9\">{c}</text>\n<text x=\"{:.0}\" y=\"{}\" font-size=\"9\">≤{}</text>",
            top + ht - bh,
            bw - 4.0,
            x + 2.0,
            top + ht - bh - 2.0,
            x + 2.0,
            top + ht + 14.0,
            if b.is_infinite() { "∞".to_string() } else { format!("{b}") }
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The Markdown report; `timeline` and `latency` are the SVG file names (same directory): one
/// renderer per section, in report order.
pub fn markdown(r: &Report, timeline: &str, latency: &str) -> String {
    let mut s = String::new();
    md_head(&mut s, r);
    gate_section(&mut s, r);
    md_pictures(&mut s, timeline, latency);
    md_uptime(&mut s, r);
    md_collection(&mut s, r);
    md_files(&mut s, r);
    md_quality(&mut s, r);
    md_reconciliation(&mut s, r);
    md_faults(&mut s, r);
    md_latency(&mut s, r);
    md_windows(&mut s, r);
    s
}

/// Title, what the run was, the notes.
fn md_head(s: &mut String, r: &Report) {
    let _ = writeln!(s, "# Soak test report — {}\n", r.label);
    let _ = writeln!(
        s,
        "**{}**. Soak {} → {} ({:.0} s real time), venue clock ×{}. Mode: `{}`.\n",
        r.label, r.soak_start_utc, r.soak_end_utc, r.soak_secs, r.rate, r.mode
    );
    let _ = writeln!(s, "Written by `soak-report` (bin/soak-report.rs, src/soak/) from the archive, its run manifests, the upload manifest, the venue's log and the supervisor's log. Procedure: docs/SOAK.md.\n");
    if !r.notes.is_empty() {
        let _ = writeln!(s, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {}", esc(n));
        }
        let _ = writeln!(s);
    }
}

/// The two SVG pictures.
fn md_pictures(s: &mut String, timeline: &str, latency: &str) {
    let _ = writeln!(s, "\n## Pictures\n\n![timeline]({timeline})\n\n![latency]({latency})\n");
    let _ = writeln!(
        s,
        "The timeline's minutes are pm-books' slot due times: one slot per --interval of real time from each \
         run's start on the chain's clock, so with a simulated clock at ×N they advance N times slower than the \
         venue's clock.\n"
    );
}

/// Uptime, restarts, SIGKILLs, disk fill, clock steps, outages.
fn md_uptime(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Uptime and restart behaviour\n");
    let _ = writeln!(
        s,
        "- chain running {:.0} s of {:.0} s = **{:.2} %**; {} chain starts; exits by status: {:?}; restarts refused (exit 2): {}",
        r.uptime.chain_up_secs, r.soak_secs, r.uptime.pct, r.uptime.chain_starts, r.uptime.exits, r.uptime.no_restart
    );
    if !r.uptime.restart_waits.is_empty() {
        let mx = r.uptime.restart_waits.iter().cloned().fold(0.0, f64::max);
        let avg = r.uptime.restart_waits.iter().sum::<f64>() / r.uptime.restart_waits.len() as f64;
        let _ = writeln!(
            s,
            "- exit → next start: mean {avg:.1} s, max {mx:.1} s ({} restarts)",
            r.uptime.restart_waits.len()
        );
    }
    let _ = writeln!(s, "- SIGKILLs: {}", r.kills.len());
    for k in &r.kills {
        let _ = writeln!(s, "  - {} {}", k.at_utc, esc(&k.detail));
    }
    let _ = writeln!(s, "- disk-full periods: {:?}", r.disk_full);
    let _ = writeln!(
        s,
        "- clock steps: {}",
        r.clock_steps.iter().map(|e| format!("{} {} s", e.at_utc, e.detail)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "- venue outages: {:?}", r.outages);
}

/// Snapshots, slots, markets, API replies, gaps, websocket events.
fn md_collection(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Collection\n");
    let _ = writeln!(s, "- total snapshots (books in 200 replies): **{}**", r.snapshots);
    let sl = &r.slots;
    let _ = writeln!(
        s,
        "- scheduled slots {} · captured {} · in outage/kill/disk-full windows {} · in the back-off after one {} · hit by an injected per-request fault {} · not attributed {} · chain-down time as slots {} · **missed-interval estimate {}**",
        sl.scheduled, sl.captured, sl.excluded, sl.excluded_tail, sl.hit_by_fault, sl.unexplained, sl.down_slots, sl.missed_interval_estimate
    );
    for u in &sl.unexplained_list {
        let _ = writeln!(s, "  - not captured, not attributed: {u}");
    }
    let _ = writeln!(s, "\n| family | tracked (starts) | stops by reason |\n|---|---|---|");
    for (f, t) in &r.markets {
        let _ = writeln!(s, "| {f} | {} | {:?} |", t.started, t.stops);
    }
    let _ = writeln!(s, "\n### API replies (archived lines) by endpoint and status (`none` = no reply)\n\n| endpoint | statuses |\n|---|---|");
    for (e, m) in &r.http {
        let _ = writeln!(s, "| {e} | {:?} |", m);
    }
    let rl: u64 = r.http.values().filter_map(|m| m.get("429")).sum();
    let errs: u64 = r
        .http
        .values()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| k.as_str() != "200" && k.as_str() != "404")
        .map(|(_, v)| v)
        .sum();
    let _ = writeln!(s, "\n- API errors (no reply or status ≥ 400 except 404): {errs}; rate limits (429): {rl}");
    let _ = writeln!(s, "- gaps by stream/kind: {:?}", r.gaps);
    let _ = writeln!(s, "- websocket events (non-frame counts include opens, errors, reconnect waits): {:?}", r.ws);
}

/// Files, compression, uploads, disk.
fn md_files(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Files, compression, uploads, disk\n");
    let f = &r.files;
    let _ = writeln!(
        s,
        "- sealed files {} ({}), uncompressed {}, **compression ratio {:.1}×**; partials left {}; unreadable tails {}; recovered {}",
        f.sealed,
        human_bytes(f.sealed_bytes),
        human_bytes(f.uncompressed_bytes),
        f.ratio,
        f.partials,
        f.unreadable_tails,
        f.recovered
    );
    for (st, (n, b)) in &f.per_stream {
        let _ = writeln!(s, "  - stream {st}: {n} files, {}", human_bytes(*b));
    }
    let _ = writeln!(s, "- corrupt files: {:?}; sealed files no manifest lists: {:?}", f.corrupt, f.unlisted);
    let _ = writeln!(s, "- lines in sealed files {} vs lines the manifests list {}", f.lines, f.manifest_lines);
    let _ = writeln!(
        s,
        "- uploads: {} records, {} files verified on the remote, {} records not verified; sealed files without a verified upload: {}",
        r.uploads.records,
        r.uploads.verified,
        r.uploads.not_verified,
        r.uploads.sealed_not_uploaded.len()
    );
    for p in r.uploads.sealed_not_uploaded.iter().take(10) {
        let _ = writeln!(s, "  - {p}");
    }
    let _ = writeln!(
        s,
        "- offload runs: {}",
        r.offloads.iter().map(|e| format!("{} {}", e.at_utc, e.detail)).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "- disk usage of the archive root at the end: {}", human_bytes(r.disk_bytes));
}

/// The data-quality checks.
fn md_quality(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Data quality\n\n| check | exit | summary |\n|---|---|---|");
    for c in &r.checks {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` |",
            c.name,
            c.rc.map(|x| x.to_string()).unwrap_or("?".into()),
            c.summary.replace('|', "\\|").replace('`', "'")
        );
    }
}

/// Books (and Gamma replies) served vs archived, then trades.
fn md_reconciliation(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Reconciliation: served vs archived\n");
    let rc = &r.reconcile;
    let _ = writeln!(
        s,
        "- venue replies logged {}; distinct books served (200, hash) {}; archived {}; matched {}; archived but not served {}",
        rc.served_replies, rc.served_books, rc.archived_books, rc.matched, rc.not_served
    );
    let _ = writeln!(
        s,
        "- Gamma replies served {} / archived gamma lines with a status {}",
        rc.gamma_served, rc.gamma_archived
    );
    for (why, n) in &rc.missing {
        let _ = writeln!(s, "- {n} books served but not archived: {why}");
    }
    trades_section(s, &r.trades);
    if let Some(k) = &r.kalshi {
        kalshi_section(s, k);
    }
}

/// Kalshi (`pm-venue --kalshi`): books by body digest, trades by `trade_id`.
fn kalshi_section(s: &mut String, k: &super::report::KalshiReconcile) {
    let _ = writeln!(s, "\n### Kalshi (venue=kalshi): served vs archived\n\n- Kalshi replies logged {}", k.replies);
    for (what, path, t) in
        [("books", "/markets/{ticker}/orderbook", &k.books), ("trades", "/markets/trades", &k.trades)]
    {
        let _ = writeln!(
            s,
            "- Kalshi {what}: {path} requests {} (200 replies {}); distinct {what} served {}; archived {}; matched {}; \
             archived but not served {}",
            t.requests, t.ok_replies, t.served, t.archived, t.matched, t.not_served
        );
        for (why, n) in &t.missing {
            let _ = writeln!(s, "- {n} Kalshi {what} served but not archived: {why}");
        }
        for key in &t.unexplained_keys {
            let _ = writeln!(s, "  - unexplained: `{key}`");
        }
    }
}

/// Every injected fault and what the archive shows of it.
fn md_faults(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Injected faults and what the archive shows\n\n| at | fault | target | visible | evidence |\n|---|---|---|---|---|");
    for x in &r.faults {
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} | {} |",
            x.at_utc,
            x.fault.replace('|', "\\|"),
            x.target,
            if x.visible { "yes" } else { "no" },
            esc(&x.evidence)
        );
    }
}

/// Receive latency quantiles.
fn md_latency(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Receive latency (our receive time − the book's timestamp)\n");
    let l = &r.latency;
    let _ = writeln!(
        s,
        "- {} books: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.n, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
}

/// Market windows per family.
fn md_windows(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n## Market windows (every family, lead → grace)\n");
    let _ = writeln!(s, "Judged span (chain clock): {} → {}\n\n| family | expected | tracked lead→grace | resolved seen |\n|---|---|---|---|", r.windows.from_utc, r.windows.to_utc);
    for (f, (e, t, res)) in &r.windows.per_family {
        let e = match (e, r.windows.interrupted_per_family.get(f)) {
            (0, Some(n)) => format!("0 (not judgeable: all {n} interrupted)"),
            (0, None) => "0 (not judgeable: no lead…grace span fits in the run)".to_string(),
            (e, _) => e.to_string(),
        };
        let _ = writeln!(s, "| {f} | {e} | {t} | {res} |");
    }
    let _ = writeln!(
        s,
        "\nWindows whose lead…grace span overlaps a SIGKILL window, a venue outage, a full disk or chain-down time \
         (not judged above: an injected fault interrupted them): {}",
        r.windows.interrupted
    );
    if !r.windows.missed.is_empty() {
        let _ = writeln!(s, "\nNot tracked end to end:\n");
        for m in &r.windows.missed {
            let _ = writeln!(s, "- {}", esc(m));
        }
    }
}

/// The trade reconciliation (distinct trades served by `/v2/trades` vs archived in the trades stream).
fn trades_section(s: &mut String, t: &super::report::TradeReconcile) {
    let _ = writeln!(s, "\n### Trades: served vs archived\n");
    if t.requests == 0 {
        let _ = writeln!(s, "- no /v2/trades request in the venue log: the trades lane was off or there is no venue");
        return;
    }
    let _ = writeln!(
        s,
        "- /v2/trades requests {} (200 replies {}); distinct trades served {}; archived {}; matched {}; archived but not served {}",
        t.requests, t.ok_replies, t.served, t.archived, t.matched, t.not_served
    );
    for (why, n) in &t.missing {
        let _ = writeln!(s, "- {n} trades served but not archived: {why}");
    }
    for k in &t.unexplained_keys {
        let _ = writeln!(s, "  - unexplained: `{k}`");
    }
}

/// The gate table, then the literal slot figure as information.
fn gate_section(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Gate\n\n| check | value | |\n|---|---|---|");
    for g in &r.gate {
        let verdict = match (g.not_judgeable, g.pass) {
            (true, _) => "NOT JUDGEABLE",
            (false, true) => "PASS",
            (false, false) => "FAIL",
        };
        let _ = writeln!(s, "| {} | {} | {verdict} |", g.name, g.value);
    }
    let _ = writeln!(
        s,
        "\nInformation, not a gate line: slots captured outside injected outages, kill windows and disk-full \
         windows only (every other missed slot counted): **{:.3} %**. It is lower by design when per-request \
         faults are injected: each one costs the slots of the back-off it causes (a 429 without Retry-After \
         backs off ~13 s, a slow reply holds the loop past the timeout); the gate line above removes exactly \
         the runs of missed slots that begin with an injected fault's reply.",
        r.slots.pct_outside_outage_kill
    );
}
