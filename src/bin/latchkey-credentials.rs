//! The `latchkey-credentials` command: `latchkey credentials` in a binary of its own, for AWS
//! `credential_process`.

fn main() -> std::process::ExitCode {
    latchkey::cli::credentials_main()
}
