#![forbid(unsafe_code)]
//! `samu-gateway`: see the library's module map in `src/lib.rs`.

fn main() -> std::process::ExitCode {
    samu_gateway::cli::main()
}
