fn main() {
    std::process::exit(abupdate::cli::main());
}
