//! The `producer-shim` binary; everything is in the library, so `sluice` can run it too.

fn main() -> std::process::ExitCode {
    producer_shim::main()
}
