//! InitProducerId: hands out idempotent-producer ids, unique across restarts.
//!
//! Ids are allocated in blocks; the end of the current block is persisted before any id in it is
//! given out, so a restart continues after it and never reuses an id.

use std::fs;
use std::path::{Path, PathBuf};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use parking_lot::Mutex;

use crate::log::LogError;

const BLOCK: i64 = 1000;
const FILE: &str = "producer-id-block";

#[derive(Debug)]
struct Ids {
    next: i64,
    block_end: i64,
}

/// Allocator of producer ids.
#[derive(Debug)]
pub(crate) struct ProducerIdAllocator {
    path: PathBuf,
    ids: Mutex<Ids>,
}

impl ProducerIdAllocator {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, LogError> {
        let path = data_dir.join(FILE);
        let persisted = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        let next = persisted.unwrap_or(0).max(0);
        Ok(Self {
            path,
            ids: Mutex::new(Ids {
                next,
                block_end: next,
            }),
        })
    }

    fn allocate(&self) -> Result<i64, LogError> {
        let mut ids = self.ids.lock();
        if ids.next >= ids.block_end {
            let end = ids.next + BLOCK;
            let tmp = self.path.with_extension("tmp");
            fs::write(&tmp, format!("{end}\n"))
                .and_then(|()| fs::File::open(&tmp)?.sync_all())
                .and_then(|()| fs::rename(&tmp, &self.path))
                .map_err(LogError::io("persist producer id block", &self.path))?;
            ids.block_end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    pub(crate) fn init_producer_id(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
        let response = InitProducerIdResponse::default();
        if req.transactional_id.is_some() {
            // Transactions are not supported; idempotence is.
            return response
                .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
        }
        // KIP-360: a producer that already has an id asks for its epoch to be bumped.
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
            return response
                .with_producer_id(req.producer_id)
                .with_producer_epoch(req.producer_epoch + 1);
        }
        match self.allocate() {
            Ok(id) => response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => {
                tracing::error!(error = %e, "cannot allocate a producer id");
                response.with_error_code(ResponseError::KafkaStorageError.code())
            }
        }
    }
}
