//! `kubectl strait`: the same CLI as a kubectl plugin.
#[tokio::main]
async fn main() {
    std::process::exit(strait_cli::main_as("kubectl strait").await);
}
