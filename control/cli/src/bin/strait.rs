//! `strait`: see `strait --help`.
#[tokio::main]
async fn main() {
    std::process::exit(strait_cli::main_as("strait").await);
}
