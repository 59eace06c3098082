//! Where replayed samples go: a topic (keyed, to the partition number of their input, like the
//! live joiner), a JSON-lines file (one sample value per line), or nowhere (benchmarks).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::ClientConfig;

use crate::config::TopicNames;
use crate::engine::Sample;
use crate::service::output::Outputs;

/// A worker hands its file lines over in pieces of about this size.
const FILE_CHUNK: usize = 1 << 20;

/// Where the samples of a replay go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Produced to this topic (created with the inputs' partition count if missing).
    Topic(String),
    /// Written to this file, one sample value per line.
    File(PathBuf),
    /// Counted only.
    Discard,
}

/// An opened destination, shared by the workers.
pub(crate) enum Sink {
    Topic(Outputs),
    File(Mutex<BufWriter<File>>),
    Discard,
}

impl Sink {
    pub(crate) fn open(
        dest: &Destination,
        client: &ClientConfig,
        inputs: &TopicNames,
    ) -> anyhow::Result<Self> {
        Ok(match dest {
            Destination::Topic(topic) => {
                let topics = TopicNames {
                    samples: topic.clone(),
                    dlq: String::new(),
                    late: String::new(),
                    ..inputs.clone()
                };
                crate::service::topology::check_and_create(client, &topics)?;
                Sink::Topic(Outputs::new(client, topics)?)
            }
            Destination::File(path) => {
                let file = File::create(path)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                Sink::File(Mutex::new(BufWriter::with_capacity(FILE_CHUNK, file)))
            }
            Destination::Discard => Sink::Discard,
        })
    }

    /// A writer for one worker.
    pub(crate) fn writer(&self) -> SampleWriter<'_> {
        SampleWriter {
            sink: self,
            buf: Vec::new(),
        }
    }

    /// Makes everything written durable: flushes the file, or waits for every delivery.
    pub(crate) fn finish(&self) -> anyhow::Result<()> {
        match self {
            Sink::Topic(outputs) => outputs.flush(Duration::from_secs(120))?,
            Sink::File(file) => file.lock().flush()?,
            Sink::Discard => {}
        }
        Ok(())
    }
}

/// One worker's handle on the sink; file lines are batched to take the lock rarely.
pub(crate) struct SampleWriter<'a> {
    sink: &'a Sink,
    buf: Vec<u8>,
}

impl SampleWriter<'_> {
    pub(crate) fn write(&mut self, s: &Sample) -> anyhow::Result<()> {
        match self.sink {
            Sink::Topic(outputs) => outputs.sample(s)?,
            Sink::File(_) => {
                self.buf.extend_from_slice(&s.bytes);
                self.buf.push(b'\n');
                if self.buf.len() >= FILE_CHUNK {
                    self.finish()?;
                }
            }
            Sink::Discard => {}
        }
        Ok(())
    }

    /// Hands over what is buffered.
    pub(crate) fn finish(&mut self) -> anyhow::Result<()> {
        if let Sink::File(file) = self.sink
            && !self.buf.is_empty()
        {
            file.lock().write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}
