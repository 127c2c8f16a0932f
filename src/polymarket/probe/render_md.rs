//! The human report (`polymarket_public_sources_probe_v1.md`): header, a table of endpoints, the
//! checkpoint-2 questions answered, then one section per endpoint. Reads [`Report`] fields only.

use super::report::{field_list, shorten, AttemptSummary, EndpointResult, Report};
use super::{RunKind, LOOPBACK_BANNER, PROBE_NAME};

/// The Markdown report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let w = &mut s;
    header(w, r);
    table(w, r);
    line(w, "## Checkpoint-2 questions\n");
    for a in &r.answers {
        line(w, &format!("**{}**  \n{}\n", a.question, a.answer));
    }
    line(w, "## Per endpoint: fields, timestamps, headers, errors\n");
    for e in &r.endpoints {
        endpoint(w, e);
    }
    line(w, "Not probed by design: the market websocket (see the API fact sheet §6; recorded by pm-stream) and trade endpoints other than `/last-trade-price`.\n");
    line(
        w,
        &format!("Machine-readable twin: `{PROBE_NAME}.json`. Raw replies: the `--raw-out` file, if one was given (schema pmarchive.raw/1)."),
    );
    s
}

fn line(w: &mut String, text: &str) {
    w.push_str(text);
    w.push('\n');
}

/// Escapes a table cell (pipes, line breaks).
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn or_none<T: ToString>(v: Option<T>, none: &str) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| none.into())
}

/// Title, loopback banner, run facts, result and the checkpoint-2 gate.
fn header(w: &mut String, r: &Report) {
    line(w, &format!("# Polymarket public sources probe (v{})\n", r.probe_version));
    if r.run_kind == RunKind::Loopback {
        line(w, &format!("> **{LOOPBACK_BANNER}.** The base URLs point at this machine (127.0.0.1/localhost): the replies are the test venue's recorded (and derived) responses, not Polymarket's. Nothing below says anything about the live venue.\n"));
    }
    let q = &r.requests;
    line(
        w,
        &format!(
            "- run kind: **{}**\n- run id: `{}`, host: `{}`\n- started {} — finished {} (UTC)\n- Gamma: `{}`; CLOB: `{}`\n- User-Agent: `{}`\n- requests: {} of a cap of {} (at most {} tries per request, ≥ {:.3} s between requests)\n- result: {}\n",
            r.run_kind.as_str(),
            r.run_id,
            r.host,
            r.started_at_utc,
            r.finished_at_utc,
            r.base_urls.gamma,
            r.base_urls.clob,
            r.user_agent,
            q.used,
            q.cap,
            q.max_attempts_per_request,
            q.min_spacing_s,
            match &r.stopped_reason {
                None => "**complete** — every endpoint answered (exit 0)".to_string(),
                Some(why) => format!("**incomplete** — {why} (exit 1)"),
            }
        ),
    );
    if q.cap_reached {
        line(
            w,
            &format!("**Stopped early: the request cap ({}) was reached before all endpoints were probed.**\n", q.cap),
        );
    }
    line(
        w,
        &format!(
            "Checkpoint-2 pass condition (one active market metadata record and one current order book fetched): **{}**{}\n",
            if r.checkpoint2_pass_condition.met_in_this_run { "met in this run" } else { "not met in this run" },
            if r.run_kind == RunKind::Loopback { " (loopback replay: it does not count either way)" } else { "" }
        ),
    );
}

/// One row per endpoint.
fn table(w: &mut String, r: &Report) {
    line(w, "## Endpoints\n");
    line(w, "| endpoint | request | outcome | status | latency ms | tries | bytes | JSON | fields |");
    line(w, "|---|---|---|---|---|---|---|---|---|");
    for e in &r.endpoints {
        let path = e.url.split_once("://").map(|(_, r)| r).and_then(|r| r.find('/').map(|i| &r[i..])).unwrap_or(&e.url);
        line(
            w,
            &format!(
                "| {} | {} `{}` | {} | {} | {} | {} | {} | {} | {} |",
                e.name,
                e.method,
                md_cell(&shorten(path, 70)),
                e.outcome.as_str(),
                or_none(e.status, "—"),
                e.latency_ms.map(|l| format!("{l:.1}")).unwrap_or_else(|| "—".into()),
                e.attempts.len(),
                or_none(e.body_bytes, "—"),
                e.json_valid.map(|j| if j { "yes" } else { "no" }).unwrap_or("—"),
                md_cell(&field_list(e, 8)),
            ),
        );
    }
    line(w, "");
}

/// One endpoint's section: outcome, tries, headers, body shape, time fields, notes.
fn endpoint(w: &mut String, e: &EndpointResult) {
    line(w, &format!("### {}\n", e.name));
    line(w, &format!("{} — `{} {}`\n", e.purpose, e.method, e.url));
    if let Some(b) = &e.request_body {
        line(w, &format!("- request body: `{}`", shorten(b, 300)));
    }
    if let Some(r) = &e.not_probed_reason {
        line(w, &format!("- **not probed**: {r}\n"));
        return;
    }
    line(
        w,
        &format!(
            "- outcome: {}; status {}{}; content-type {}; {} bytes; body kind {}",
            e.outcome.as_str(),
            or_none(e.status, "none"),
            e.expected_status
                .map(|x| format!(
                    " (expected {x}{})",
                    if e.status == Some(x) { ", as expected" } else { ", NOT as expected" }
                ))
                .unwrap_or_default(),
            e.content_type.as_deref().map(|c| format!("`{c}`")).unwrap_or_else(|| "none".into()),
            e.body_bytes.unwrap_or(0),
            e.body_kind.as_deref().unwrap_or("none"),
        ),
    );
    for a in &e.attempts {
        line(w, &attempt(a));
    }
    if e.cap_limited {
        line(w, "- retries cut short by the request cap");
    }
    if let Some(err) = &e.error {
        line(w, &format!("- error: {}", md_cell(&shorten(err, 300))));
    }
    line(
        w,
        &format!(
            "- rate-limit headers: {}; Retry-After: {}; Date: {}",
            if e.ratelimit_headers.is_empty() {
                "none".to_string()
            } else {
                e.ratelimit_headers.iter().map(|(k, v)| format!("`{k}: {v}`")).collect::<Vec<_>>().join(", ")
            },
            if e.retry_after.is_empty() { "none".to_string() } else { e.retry_after.join(", ") },
            e.date_header.as_deref().unwrap_or("none")
        ),
    );
    body(w, e);
    if let Some(n) = &e.notes {
        let text = serde_json::to_string(n).unwrap_or_default();
        line(w, &format!("- notes: `{}`", shorten(&text, 1200)));
    }
    line(w, "");
}

fn attempt(a: &AttemptSummary) -> String {
    format!(
        "- try {}: sent {}, status {}, {:.1} ms, {}{}{}",
        a.attempt,
        a.sent_at_utc,
        or_none(a.status, "none"),
        a.latency_ms,
        a.verdict,
        a.retry_after.as_deref().map(|r| format!(", Retry-After {r}")).unwrap_or_default(),
        if a.waited_before_s > 0.0 { format!(", waited {:.3} s before", a.waited_before_s) } else { String::new() }
    )
}

/// The body's shape and its time fields.
fn body(w: &mut String, e: &EndpointResult) {
    if let Some(sh) = &e.shape {
        let mut l = format!("- body: {}", sh.kind);
        if let Some(n) = sh.array_len {
            l.push_str(&format!(" of {n} {}", sh.element_kind.as_deref().unwrap_or("elements")));
        }
        line(w, &l);
        if !sh.fields.is_empty() {
            let list: Vec<String> = sh.fields.iter().map(|f| format!("`{}`: {}", f.name, f.ty)).collect();
            line(
                w,
                &format!(
                    "- fields ({}{}): {}",
                    sh.fields.len(),
                    if sh.array_len.is_some() { ", of the first element" } else { "" },
                    list.join(", ")
                ),
            );
        }
    }
    for t in &e.timestamps {
        line(
            w,
            &format!(
                "- time field `{}` = `{}` → {}{}{}",
                t.path,
                shorten(&t.value.to_string(), 60),
                t.interpretation,
                t.utc.as_deref().map(|u| format!(" = {u}")).unwrap_or_default(),
                t.age_s.map(|a| format!(" ({a:.3} s before our receive time)")).unwrap_or_default()
            ),
        );
    }
}
