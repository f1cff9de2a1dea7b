//! Arbitrary `<Stream>` descriptions into `twiml::render`: `invariants::twiml`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants;
use streamguard::wire::twiml::StreamTwiml;

fuzz_target!(|input: StreamTwiml| {
    invariants::twiml(&input);
});
