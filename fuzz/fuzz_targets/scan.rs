#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sipwarden::fuzzing::scan_bytes(data));
