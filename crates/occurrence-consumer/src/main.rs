//! The `occurrence-consumer` binary; everything is in the library, so `sluice` can run it too.

fn main() -> std::process::ExitCode {
    occurrence_consumer::main()
}
