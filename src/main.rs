//! The `latchkey` command: parse, run, exit.

fn main() -> std::process::ExitCode {
    latchkey::cli::main()
}
