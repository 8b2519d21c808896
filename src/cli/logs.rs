//! Where `serve`'s log lines go: a shared buffer that request workers append to, and one
//! writer thread that moves it to stdout in batches.
//!
//! Why not a channel of lines (tracing-appender): under load every line then costs a
//! wake-up of the writer thread and a `write(2)` of its own, and the writer spins in
//! `sched_yield` between lines — measured at ~6 µs of CPU per admission request, as much as
//! the decision itself. Here a worker takes a lock for one `memcpy`; the writer is woken
//! only when the buffer goes from empty to non-empty, then waits [`LINGER`] for a batch to
//! gather and writes it with one call. Lines reach stdout at most ~10 ms late.
//!
//! A slow or stalled stdout never blocks a worker: the writer thread is the only one that
//! waits for it. Lines arriving while the buffer holds [`CAPACITY`] bytes are dropped whole
//! (never cut) and counted; the count is logged once the writer catches up.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes buffered at most (~25k JSON lines); lines beyond it are dropped.
pub const CAPACITY: usize = 8 << 20;
/// How long the writer lets a batch gather after the first line of it arrives.
const LINGER: Duration = Duration::from_millis(10);
/// What the writer keeps of a large batch's allocation once it is written.
const KEEP: usize = 64 << 10;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

struct Shared {
    buffer: Mutex<Buffer>,
    ready: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` handed to the subscriber: cheap to clone, never blocks on I/O.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the writer thread when dropped.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`.
pub fn batched<W: Write + Send + 'static>(out: W) -> io::Result<(LogWriter, Flush)> {
    with_capacity(out, CAPACITY)
}

fn with_capacity<W: Write + Send + 'static>(
    out: W,
    capacity: usize,
) -> io::Result<(LogWriter, Flush)> {
    let shared = Arc::new(Shared {
        buffer: Mutex::default(),
        ready: Condvar::new(),
        capacity,
    });
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = shared.clone();
            move || write_batches(&shared, out)
        })?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        Flush {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut buffer = shared.lock();
        while buffer.bytes.is_empty() && buffer.dropped == 0 && !buffer.closed {
            buffer = shared
                .ready
                .wait(buffer)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if buffer.closed && buffer.bytes.is_empty() && buffer.dropped == 0 {
            break;
        }
        if !buffer.closed {
            drop(buffer);
            std::thread::sleep(LINGER);
            buffer = shared.lock();
        }
        std::mem::swap(&mut buffer.bytes, &mut batch);
        let dropped = std::mem::take(&mut buffer.dropped);
        drop(buffer);
        // A failing stdout has nowhere to report to; the lines are gone either way.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        batch.shrink_to(KEEP);
        if dropped > 0 {
            // Through the subscriber, so the notice has the format of every other line.
            tracing::warn!(
                dropped_lines = dropped,
                "log lines dropped: stdout did not keep up"
            );
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogWriter {
    /// Queues one whole line: taken, or dropped whole (and counted) when the buffer is full.
    pub fn line(&self, line: &[u8]) {
        let mut buffer = self.shared.lock();
        if buffer.closed || buffer.bytes.len() + line.len() > self.shared.capacity {
            buffer.dropped += 1;
            return;
        }
        let first = buffer.bytes.is_empty();
        buffer.bytes.extend_from_slice(line);
        drop(buffer);
        if first {
            self.shared.ready.notify_one();
        }
    }
}

impl Write for LogWriter {
    /// The subscriber writes each line with one call: a line is taken or dropped whole.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A stdout stand-in: records what reaches it; blocks until opened when `gate` is set.
    #[derive(Clone, Default)]
    struct Sink {
        seen: Arc<Mutex<Vec<u8>>>,
        gate: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if let Some(gate) = &self.gate {
                let _ = gate.lock().map(|rx| rx.recv());
            }
            self.seen
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.seen.lock().expect("sink").clone()).expect("utf-8")
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_are_flushed_on_drop() {
        let sink = Sink::default();
        let (writer, flush) = batched(sink.clone()).expect("thread");
        let mut workers = Vec::new();
        for t in 0..4 {
            let mut w = writer.clone();
            workers.push(std::thread::spawn(move || {
                for i in 0..500 {
                    w.write_all(format!("{t} {i}\n").as_bytes()).expect("write");
                }
            }));
        }
        for w in workers {
            w.join().expect("worker");
        }
        drop(flush);
        let out = text(&sink);
        assert_eq!(out.lines().count(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = out
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(who, _)| *who == t.to_string())
                .map(|(_, i)| i.parse().expect("number"))
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn a_stalled_stdout_never_blocks_a_writer_and_overflow_drops_whole_lines() {
        let (open, gate) = mpsc::channel();
        let sink = Sink {
            gate: Some(Arc::new(Mutex::new(gate))),
            ..Sink::default()
        };
        let (mut writer, flush) = with_capacity(sink.clone(), 1_000).expect("thread");
        // The writer thread takes the first line and then blocks in the stalled sink; these
        // writes must all return while it is stuck.
        writer.write_all(b"first\n").expect("write");
        std::thread::sleep(LINGER * 3);
        for i in 0..1_000 {
            writer
                .write_all(format!("line {i:04}\n").as_bytes())
                .expect("write");
        }
        assert!(text(&sink).is_empty(), "nothing got through the stall");
        // Open the sink for good and let everything drain.
        for _ in 0..16 {
            let _ = open.send(());
        }
        drop(open);
        drop(flush);
        let out = text(&sink);
        let kept: Vec<&str> = out.lines().filter(|l| l.starts_with("line ")).collect();
        // 1 000 bytes hold 100 ten-byte lines: the first 100 are kept, whole and in order.
        assert_eq!(kept.len(), 100, "{out}");
        assert!(kept.iter().all(|l| l.len() == 9));
        assert_eq!(kept[0], "line 0000");
        assert_eq!(kept[99], "line 0099");
        assert!(out.starts_with("first\n"));
    }
}
