//! One WebSocket text message into the frame parser and the `start` checks:
//! `invariants::start_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants;

fuzz_target!(|data: &[u8]| {
    invariants::start_frame(data);
});
