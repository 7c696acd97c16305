//! The `deq` command-line tool.

fn main() {
    eprintln!("deq: the train, eval, bench and gradcheck commands are not yet available");
    std::process::exit(2);
}
