//! Raw HTTP request heads (parsed by httparse) into `upgrade::decide`:
//! `invariants::upgrade_request_raw`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants;

fuzz_target!(|data: &[u8]| {
    invariants::upgrade_request_raw(data);
});
