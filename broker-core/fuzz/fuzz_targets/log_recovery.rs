//! Log recovery over arbitrary segment and index bytes: opening never panics, and after an unclean
//! open every batch the log serves passes validation and offsets are contiguous.
#![no_main]

use broker_core::log::batch::validate_all;
use broker_core::log::{LogConfig, PartitionLog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let split = usize::from(mode >> 1).min(rest.len());
    let (index, segment) = rest.split_at(split);
    let dir = tempfile::tempdir().expect("tempdir");
    let stem = format!("{:020}", 0);
    std::fs::write(dir.path().join(format!("{stem}.log")), segment).expect("write");
    std::fs::write(dir.path().join(format!("{stem}.index")), index).expect("write");
    std::fs::write(dir.path().join(format!("{stem}.timeindex")), index).expect("write");
    let clean = mode & 1 == 1;
    if clean {
        std::fs::write(dir.path().join(".clean-shutdown"), b"").expect("write");
    }
    let config = LogConfig { index_interval_bytes: 64, ..LogConfig::default() };
    let Ok(log) = PartitionLog::open(dir.path(), config, 0) else { return };
    let _ = log.offset_for_timestamp(0);
    let mut next = log.log_start_offset();
    while let Ok(read) = log.read(next, 4096) {
        let Some(slice) = read.slice else { break };
        let bytes = slice.read_to_vec().expect("read");
        let Ok(headers) = validate_all(&bytes, usize::MAX) else {
            // Only a clean-shutdown marker makes the log trust its files unverified.
            assert!(clean, "unclean recovery served an invalid batch");
            break;
        };
        let Some(last) = headers.last() else { break };
        if !clean {
            assert!(headers[0].base_offset <= next && headers[0].last_offset() >= next);
        }
        if last.next_offset() <= next {
            break;
        }
        next = last.next_offset();
    }
});
