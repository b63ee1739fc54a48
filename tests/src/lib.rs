//! Support for wasmq's end-to-end tests: helpers shared by the test binary (`it/`) and the child
//! processes it starts and kills.

/// The body a crash-test message with sequence number `seq` carries: its length and bytes follow
/// from `seq` alone, so the checker can tell a damaged or misplaced message from the right one.
pub fn crash_body(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2_654_435_761) % 16_384) as usize;
    let mut x = seq ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The queue a crash-test message goes to.
pub fn crash_queue(seq: u64) -> u32 {
    (seq % 4) as u32
}

/// The store configuration both the child and the checker use: 1 MiB segments so roll-over
/// happens several times a cycle.
pub fn crash_store_config(dir: &std::path::Path, sync: bool) -> wasmq_store::StoreConfig {
    let mut c = wasmq_store::StoreConfig::small_for_tests(dir);
    c.message_bytes_max = 64 << 10;
    c.flush = if sync {
        wasmq_store::FlushMode::Sync { timeout: std::time::Duration::from_secs(10) }
    } else {
        wasmq_store::FlushMode::Async { interval: std::time::Duration::from_millis(100) }
    };
    c
}
