//! wasmq's end-to-end tests: real processes, real files, SIGKILL.

mod broker;
mod cluster;
mod controller;
mod groups;
mod plugins;
mod reconnect;
mod replication;
mod rocketmq;
mod security;
mod store_crash;
mod store_disk_full;
mod transactions;
