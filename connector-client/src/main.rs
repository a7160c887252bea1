//! `ferrite-connector`: run a (simulated) gateway, or one-shot verbs for
//! scripts. Everything is in [`ferrite_connector::cli`].

fn main() -> std::process::ExitCode {
    ferrite_connector::cli::main()
}
