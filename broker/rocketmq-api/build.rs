//! Generates the RocketMQ 5 API's messages, the `MessagingService` server trait and its client
//! from the vendored `.proto` files (`third_party/rocketmq-apis`, unmodified), compiled by `protox` so
//! that no `protoc` needs installing.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("cargo sets CARGO_MANIFEST_DIR")?)
        .join("../../third_party/rocketmq-apis");
    let service = root.join("apache/rocketmq/v2/service.proto");
    println!("cargo:rerun-if-changed={}", root.join("apache/rocketmq/v2").display());
    let descriptors = protox::compile([&service], [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_transport(false)
        .bytes(".apache.rocketmq.v2.Message.body")
        .compile_fds(descriptors)?;
    Ok(())
}
