//! Benchmark helper (not a tool): a loopback websocket server (127.0.0.1 only) that waits for one
//! client's subscribe message, then sends N text frames as fast as it can, cycling through the
//! recorded `book` + 15 `price_change` messages of tests/fixtures/polymarket/
//! ws_market_book_then_price_changes_trimmed.json (re-serialized compactly: DERIVED bytes, same
//! content), answers `PING` with `PONG`, and exits when the client goes away.
//!
//! Usage: ws_replay_server PORT_FILE N
//! Binds an ephemeral port and writes it to PORT_FILE (so that the caller can start the client).
//! Prints `sent N frames in S s` on stderr. Used by scripts/bench_stream.sh.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: ws_replay_server PORT_FILE N");
        std::process::exit(2);
    }
    let n: u64 = args[2].parse().expect("N");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/polymarket/ws_market_book_then_price_changes_trimmed.json"
    );
    let msgs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    let frames: Vec<String> = msgs.iter().map(|m| m.to_string()).collect();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    std::fs::write(&args[1], listener.local_addr().unwrap().port().to_string()).expect("port file");
    let (tcp, _) = listener.accept().expect("accept");
    let mut ws = tungstenite::accept(tcp).expect("handshake");
    // The subscribe message.
    loop {
        if let Message::Text(_) = ws.read().expect("subscribe") {
            break;
        }
    }
    let start = Instant::now();
    for i in 0..n {
        // write() queues without flushing; flush in batches.
        if ws.write(Message::text(frames[(i % frames.len() as u64) as usize].clone())).is_err() {
            break;
        }
        if i % 64 == 63 && ws.flush().is_err() {
            break;
        }
    }
    let _ = ws.flush();
    eprintln!("ws_replay_server: sent {n} frames in {:.3} s", start.elapsed().as_secs_f64());
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(200))).ok();
    // Keep answering PINGs until the client closes.
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str() == "PING" => {
                let _ = ws.send(Message::text("PONG"));
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}
