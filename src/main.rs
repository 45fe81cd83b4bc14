fn main() {
    std::process::exit(timectl::cli::main());
}
