//! Starts the broker inside this process through the library API, as `recjoin up` does.
//! Usage: `cargo run -p broker-core --example embedded_broker -- 127.0.0.1:9092 ./data`

use broker_core::broker::BrokerConfig;
use broker_core::server::BrokerServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9092".to_owned())
        .parse()?;
    let data_dir = args.next().unwrap_or_else(|| "./data".to_owned());
    let server = BrokerServer::start(BrokerConfig::new(listen, data_dir)).await?;
    println!("listening on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await?;
    Ok(())
}
