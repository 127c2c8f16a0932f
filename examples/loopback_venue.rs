//! The loopback test venue as a standalone server, for sample runs and benchmarks of whole pipelines
//! (scripts/sample_run_loopback.sh). It serves the REAL RECORDED responses of tests/fixtures/polymarket
//! (and records derived from them) on 127.0.0.1 only — see tests/common/venue.rs for exactly what is
//! recorded, derived or a stand-in. Nothing it serves is live data.
//!
//! Usage: cargo run --release --example loopback_venue [-- --port N] [--book-gone-after SECS]
//! Prints `http://127.0.0.1:<port>` on stdout, then serves until killed.

#[path = "../tests/common/venue.rs"]
mod venue;

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port: u16 = 0;
    let mut gone: Option<f64> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|v| v.parse().ok()).expect("--port N"),
            "--book-gone-after" => gone = args.next().and_then(|v| v.parse().ok()),
            "-h" | "--help" => {
                println!("loopback_venue [--port N] [--book-gone-after SECS]");
                return;
            }
            other => {
                eprintln!("loopback_venue: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let v = venue::Venue::start_on(port);
    if let Some(g) = gone {
        v.set_book_gone_after(Duration::from_secs_f64(g));
    }
    println!("{}", v.url());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
