fn main() {
    eprintln!("jsonl-rotate: not built yet");
    std::process::exit(2);
}
