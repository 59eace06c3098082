//! Broker metrics (DESIGN.md section 6), recorded through the `metrics` facade: requests and
//! latency per API, bytes in and out, records produced, log offsets and sizes, group lag, free
//! disk space. With no recorder installed every call is a no-op. Label sets are bounded: API
//! names, topics, partitions and groups, never keys or clients.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use super::Broker;

/// Registers help text and units (and the bad-request series at zero); call once after
/// installing a recorder.
pub fn describe() {
    describe_counter!(
        "recjoin_broker_requests_total",
        "Requests answered, by API."
    );
    describe_histogram!(
        "recjoin_broker_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its response being ready, by API (Fetch includes long-poll waiting)."
    );
    describe_counter!(
        "recjoin_broker_request_bytes_total",
        Unit::Bytes,
        "Bytes of requests received."
    );
    describe_counter!(
        "recjoin_broker_response_bytes_total",
        Unit::Bytes,
        "Bytes of responses sent."
    );
    describe_counter!(
        "recjoin_broker_bad_requests_total",
        "Frames refused, by reason; the connection is closed."
    );
    // Start every reason's series at zero, so rates and alerts see it before the first one.
    for reason in ["frame", "malformed", "unknown_api", "unsupported_version"] {
        counter!("recjoin_broker_bad_requests_total", "reason" => reason).increment(0);
    }
    describe_gauge!("recjoin_broker_connections", "Open client connections.");
    describe_counter!(
        "recjoin_broker_produced_records_total",
        "Records appended, by topic."
    );
    describe_counter!(
        "recjoin_broker_produced_bytes_total",
        Unit::Bytes,
        "Record bytes appended, by topic."
    );
    describe_counter!(
        "recjoin_broker_fetched_bytes_total",
        Unit::Bytes,
        "Record bytes served to fetches, by topic."
    );
    describe_gauge!(
        "recjoin_broker_log_end_offset",
        "Next offset to be written, by topic and partition."
    );
    describe_gauge!(
        "recjoin_broker_log_start_offset",
        "Oldest offset kept, by topic and partition."
    );
    describe_gauge!(
        "recjoin_broker_high_watermark",
        "Offset consumers may read up to, by topic and partition."
    );
    describe_gauge!(
        "recjoin_broker_log_size_bytes",
        Unit::Bytes,
        "Bytes on disk, by topic and partition."
    );
    describe_counter!(
        "recjoin_broker_fsyncs_total",
        "Data fsyncs, by topic (group commit shares them)."
    );
    describe_gauge!(
        "recjoin_broker_group_lag",
        "Log end offset minus the group's committed offset, by group, topic and partition."
    );
    describe_gauge!(
        "recjoin_broker_disk_free_bytes",
        Unit::Bytes,
        "Bytes available to the broker on the file system of its data directory."
    );
    describe_gauge!(
        "recjoin_broker_disk_size_bytes",
        Unit::Bytes,
        "Size of the file system of the broker's data directory."
    );
}

/// Records one answered request.
pub(crate) fn request(api: &'static str, elapsed: Duration, bytes_in: usize, bytes_out: u64) {
    counter!("recjoin_broker_requests_total", "api" => api).increment(1);
    histogram!("recjoin_broker_request_duration_seconds", "api" => api)
        .record(elapsed.as_secs_f64());
    counter!("recjoin_broker_request_bytes_total").increment(bytes_in as u64);
    counter!("recjoin_broker_response_bytes_total").increment(bytes_out);
}

/// Records a refused frame.
pub(crate) fn bad_request(reason: &'static str) {
    counter!("recjoin_broker_bad_requests_total", "reason" => reason).increment(1);
}

/// Tracks open connections.
pub(crate) fn connections(delta: f64) {
    gauge!("recjoin_broker_connections").increment(delta);
}

/// Records an append of `records` records and `bytes` bytes to `topic`.
pub(crate) fn produced(topic: &str, records: u64, bytes: usize) {
    let topic = topic.to_owned();
    counter!("recjoin_broker_produced_records_total", "topic" => topic.clone()).increment(records);
    counter!("recjoin_broker_produced_bytes_total", "topic" => topic).increment(bytes as u64);
}

/// Records record bytes served from `topic`.
pub(crate) fn fetched(topic: &str, bytes: u64) {
    counter!("recjoin_broker_fetched_bytes_total", "topic" => topic.to_owned()).increment(bytes);
}

/// Free and total bytes of the file system holding `dir` (statvfs), if it can be read.
#[allow(
    clippy::unnecessary_cast,
    reason = "statvfs field types differ between platforms; u64 on 64-bit Linux"
)]
fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a writable statvfs buffer.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    // Block counts and sizes are unsigned and at most 64 bits wide on every platform: lossless.
    let block = st.f_frsize as u64;
    Some((
        (st.f_bavail as u64).saturating_mul(block),
        (st.f_blocks as u64).saturating_mul(block),
    ))
}

/// Updates the per-partition and per-group gauges from the broker's current state.
pub fn refresh(broker: &Broker) {
    if let Some((free, size)) = disk_space(&broker.config.data_dir) {
        gauge!("recjoin_broker_disk_free_bytes").set(free as f64);
        gauge!("recjoin_broker_disk_size_bytes").set(size as f64);
    }
    for (name, topic) in broker.logs.topics() {
        let fsyncs: u64 = topic.partitions.iter().map(|log| log.fsync_count()).sum();
        counter!("recjoin_broker_fsyncs_total", "topic" => name.clone()).absolute(fsyncs);
        for (p, log) in topic.partitions.iter().enumerate() {
            let labels = [("topic", name.clone()), ("partition", p.to_string())];
            gauge!("recjoin_broker_log_end_offset", &labels).set(log.log_end_offset() as f64);
            gauge!("recjoin_broker_log_start_offset", &labels).set(log.log_start_offset() as f64);
            gauge!("recjoin_broker_high_watermark", &labels).set(log.high_watermark() as f64);
            gauge!("recjoin_broker_log_size_bytes", &labels).set(log.size_bytes() as f64);
        }
    }
    for group in broker.groups.groups() {
        for (topic, partition, committed) in broker.groups.committed_offsets(&group) {
            let Some(log) = broker.logs.partition(&topic, partition) else {
                continue;
            };
            let lag = (log.log_end_offset() - committed).max(0);
            gauge!(
                "recjoin_broker_group_lag",
                "group" => group.clone(),
                "topic" => topic,
                "partition" => partition.to_string()
            )
            .set(lag as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_of_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (free, size) = disk_space(dir.path()).expect("statvfs of a directory");
        assert!(size > 0 && free <= size, "free {free} of {size}");
        assert_eq!(disk_space(&dir.path().join("missing")), None);
    }
}
