use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = erasure::cli::Cli::parse();
    erasure::telemetry::init();
    erasure::broker::prepare_io_runtime();
    match erasure::cli::execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", erasure::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
