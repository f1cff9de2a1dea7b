//! Sequences of events on two connections into `Session::handle`: `invariants::session`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, SessionInput};

fuzz_target!(|input: SessionInput| {
    invariants::session(&input);
});
