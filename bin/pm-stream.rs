fn main() {
    eprintln!("pm-stream: not built yet");
    std::process::exit(2);
}
