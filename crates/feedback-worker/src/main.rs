//! The `feedback-worker` binary; everything is in the library, so `sluice` can run it too.

fn main() -> std::process::ExitCode {
    feedback_worker::main()
}
