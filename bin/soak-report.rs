const USAGE: &str = "
soak-report — write the soak report (Markdown + SVG pictures + JSON) from a soak's archive and logs.

Reads the archive ROOT (raw files, manifests/run-*.json, manifests/uploads.jsonl), the soak venue's
log (pm-venue --log), the supervisor's log (pipelines/soak.sh) and, with --checks, the outputs of the
data-quality checks soak.sh ran (<name>.out and <name>.rc: manifest_verify, manifest_status,
normalize, normalize_check, rebuild). Writes OUT (Markdown), and beside it OUT without .md plus
_timeline.svg, _latency.svg and .json (the typed report). Every metric and how it is computed:
docs/SOAK.md.

Usage:
    soak-report --archive ROOT --venue-log FILE --supervisor-log FILE --out FILE.md [options]

Options:
    --archive ROOT          The soak's archive root.
    --venue-log FILE        pm-venue's JSONL log.
    --supervisor-log FILE   soak.sh's JSONL log.
    --checks DIR            Outputs of the data-quality checks.
    --out FILE.md           The report (e.g. reports/soak_test_2026-12-01_loopback.md).
    --label TEXT            Title label, e.g. \"LOOPBACK soak\". [default: LOOPBACK soak]
    --flush-secs SECS       The chain's PMARCHIVE_FLUSH_SECS. [default: 5]
    --interval SECS         The chain's PMARCHIVE_INTERVAL. [default: 1]
    --lead SECS             The chain's PMARCHIVE_LEAD. [default: 60]
    --grace SECS            The chain's PMARCHIVE_GRACE. [default: 120]
    --families LIST         The chain's PMARCHIVE_FAMILIES. [default: 5m,15m,1h,4h,daily]
    --note TEXT             A note for the report (a shortfall and why, a re-run check). Repeatable.
    -h, --help              Show this help.
    -V, --version           Show the version.

Exit status: 0 the report was written and every gate line passes; 1 written, some gate line fails
or is not judgeable in this run (no evidence, e.g. no market window fitted between kills);
2 bad arguments, an input that cannot be read or an output that cannot be written.
";

use std::path::PathBuf;

use pm_archive::cli::{self, ExitCode};
use pm_archive::soak::{render, report};

fn main() {
    cli::main("soak-report", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let (mut archive, mut venue_log, mut sup_log, mut checks, mut out) = (None, None, None, None, None);
    let mut label = String::from("LOOPBACK soak");
    let (mut flush, mut interval, mut lead, mut grace) = (5.0f64, 1.0f64, 60.0f64, 120.0f64);
    let mut families = String::from("5m,15m,1h,4h,daily");
    let mut notes: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("archive") => archive = Some(PathBuf::from(p.value()?)),
            Long("venue-log") => venue_log = Some(PathBuf::from(p.value()?)),
            Long("supervisor-log") => sup_log = Some(PathBuf::from(p.value()?)),
            Long("checks") => checks = Some(PathBuf::from(p.value()?)),
            Long("out") => out = Some(PathBuf::from(p.value()?)),
            Long("label") => label = cli::value(&mut p, "--label")?,
            Long("flush-secs") => flush = cli::value(&mut p, "--flush-secs")?,
            Long("interval") => interval = cli::value(&mut p, "--interval")?,
            Long("lead") => lead = cli::value(&mut p, "--lead")?,
            Long("grace") => grace = cli::value(&mut p, "--grace")?,
            Long("families") => families = cli::value(&mut p, "--families")?,
            Long("note") => notes.push(cli::value(&mut p, "--note")?),
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("soak-report"),
            other => return cli::unexpected(other),
        }
    }
    let (Some(archive), Some(venue_log), Some(supervisor_log), Some(out)) = (archive, venue_log, sup_log, out) else {
        return cli::usage("--archive, --venue-log, --supervisor-log and --out are required");
    };
    for (flag, v) in [("--flush-secs", flush), ("--interval", interval), ("--lead", lead), ("--grace", grace)] {
        if !(v.is_finite() && v >= 0.0) {
            return cli::usage(format!("{flag}: must be a number >= 0"));
        }
    }
    if interval <= 0.0 {
        return cli::usage("--interval: must be > 0");
    }
    let Some(stem) = out.to_str().and_then(|s| s.strip_suffix(".md")).map(str::to_string) else {
        return cli::usage("--out: must end in .md");
    };
    let inp = report::Inputs {
        archive,
        venue_log,
        supervisor_log,
        checks_dir: checks,
        flush_secs: flush,
        interval_secs: interval,
        lead_secs: lead,
        grace_secs: grace,
        families: families.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        label,
        notes,
    };
    let r = report::build(&inp).map_err(|e| cli::Error::Msg(format!("cannot read the inputs: {e}")))?;
    let base = |suffix: &str| PathBuf::from(format!("{stem}{suffix}"));
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (tl, la, js) = (base("_timeline.svg"), base("_latency.svg"), base(".json"));
    let write = |p: &PathBuf, text: String| {
        std::fs::write(p, text).map_err(|e| cli::Error::Msg(format!("cannot write {}: {e}", p.display())))
    };
    write(&tl, render::timeline_svg(&r))?;
    write(&la, render::latency_svg(&r))?;
    write(&js, serde_json::to_string_pretty(&r).expect("serializes") + "\n")?;
    write(&out, render::markdown(&r, &name(&tl), &name(&la)))?;
    let failed: Vec<&str> = r.gate.iter().filter(|g| !g.pass).map(|g| g.name.as_str()).collect();
    let nj = r.gate.iter().filter(|g| g.not_judgeable).count();
    cli::print(&format!(
        "soak-report: wrote {} ({} of {} gate lines pass, {nj} not judgeable in this run)\n",
        out.display(),
        r.gate.len() - failed.len(),
        r.gate.len()
    ))?;
    Ok(if failed.is_empty() { ExitCode::Success } else { ExitCode::Failure })
}
