fn main() {
    std::process::exit(streem::cli::main());
}
