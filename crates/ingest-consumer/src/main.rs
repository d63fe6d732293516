//! The `ingest-consumer` binary; everything is in the library, so `sluice` can run it too.

fn main() -> std::process::ExitCode {
    ingest_consumer::main()
}
