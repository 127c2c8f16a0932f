//! Benchmark helper (not a tool): the loopback websocket venue of tests/common/ws.rs (127.0.0.1 only;
//! the same implementation the tests use) as a process.
//!
//! Usage:
//!     ws_replay_server PORT_FILE N
//!         Waits for one client's subscribe message, then sends N text frames as fast as it can,
//!         cycling through the recorded `book` + 15 `price_change` messages of
//!         tests/fixtures/polymarket/ws_market_book_then_price_changes_trimmed.json (re-serialized
//!         compactly: DERIVED bytes, same content), answers `PING` with `PONG`, and exits when that
//!         client goes away. Prints `sent N frames in S s` on stderr. Used by scripts/bench_stream.sh.
//!     ws_replay_server --model PORT_FILE EVENTS_PER_SEC [SEED]
//!         The modelled venue (tests/common/ws.rs `Model`): follows each connection's subscriptions
//!         and streams EVENTS_PER_SEC modelled events per second over the subscribed assets (one
//!         book model for all connections; with one connection, per connection); runs until killed. Used by
//!         scripts/bench_ws_footprint.sh.
//!
//! Binds an ephemeral port and writes it to PORT_FILE (so that the caller can start the client).

#[path = "../tests/common/ws.rs"]
mod ws;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ws::{Behaviour, WsServer};

fn usage() -> ! {
    eprintln!("usage: ws_replay_server PORT_FILE N | ws_replay_server --model PORT_FILE EVENTS_PER_SEC [SEED]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (port_file, behaviour, once) = match args.as_slice() {
        [m, port_file, rate, rest @ ..] if m == "--model" && rest.len() <= 1 => {
            let events_per_sec: f64 = rate.parse().unwrap_or_else(|_| usage());
            let seed: u64 = rest.first().map(|s| s.parse().unwrap_or_else(|_| usage())).unwrap_or(1);
            (port_file, Behaviour::Model { events_per_sec, seed }, false)
        }
        [port_file, n] => {
            let n: u64 = n.parse().unwrap_or_else(|_| usage());
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/polymarket/ws_market_book_then_price_changes_trimmed.json"
            );
            let msgs: Vec<serde_json::Value> =
                serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
            (port_file, Behaviour::Blast { frames: msgs.iter().map(|m| m.to_string()).collect(), n }, true)
        }
        _ => usage(),
    };
    let server = WsServer::start_with(behaviour, None);
    std::fs::write(port_file, server.port.to_string()).expect("port file");
    // Blast: exit when the one client has gone away. Model: run until killed.
    while !(once && server.finished.load(Ordering::SeqCst) >= 1) {
        std::thread::sleep(Duration::from_millis(50));
    }
}
