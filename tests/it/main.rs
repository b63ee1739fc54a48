//! wasmq's end-to-end tests: real processes, real files, SIGKILL.

mod store_crash;
