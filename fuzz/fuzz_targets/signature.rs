//! Arbitrary URLs, parameters, bodies and headers into `signature::validate`:
//! `invariants::signature`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, SignatureInput};

fuzz_target!(|input: SignatureInput| {
    invariants::signature(&input);
});
