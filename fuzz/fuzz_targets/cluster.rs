#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sipwarden_core::fuzzing::cluster_bytes(data));
