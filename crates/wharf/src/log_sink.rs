//! Where `wharf serve`'s log lines go: stderr, written by a thread of its
//! own in batches, so that a request never waits on the write of its
//! access-log line and a busy node makes one `write` for many lines.
//!
//! Owns: the queue of formatted lines (bounded: [`QUEUE_LINES`]), the
//! writer thread, and the count of access-log lines dropped because the
//! queue was full (`wharf_log_lines_dropped_total`).
//!
//! Must never: block a request on an access-log line (when the queue is
//! full the line is dropped and counted), drop any other line (those wait
//! for room: warnings and errors are rare and must be read), or end the
//! process with lines still queued ([`flush`] at every exit of `serve`).
//!
//! Lines are formatted on the thread that logs (tracing-subscriber's
//! formatter); only the write moves. The order of lines is the order they
//! were queued. The writer polls every [`IDLE`] rather than sleep on the
//! queue, so queuing a line is a lock-free push that wakes nobody; a line
//! reaches stderr at most that long after it was logged.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before access-log lines are dropped.
pub const QUEUE_LINES: usize = 16_384;

enum Item {
    Line(Vec<u8>),
    /// Everything queued before it is written; then the sender is told.
    Flush(SyncSender<()>),
}

/// The queue's sending side, as the formatter's writer factory.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Item>,
}

static SINK: OnceLock<LogSink> = OnceLock::new();

/// The sink, its writer thread started on the first call.
pub fn sink() -> LogSink {
    SINK.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("wharf-log".into())
            .spawn(move || write_loop(rx, std::io::stderr()))
            .expect("start the log writer thread");
        LogSink { tx }
    })
    .clone()
}

/// Writes out every line queued so far (waits at most `within`).
pub fn flush(within: Duration) {
    let Some(sink) = SINK.get() else { return };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    if sink.tx.send(Item::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(within);
    }
}

/// How long the writer thread sleeps when the queue is empty. It polls
/// rather than waits on the queue, so that queuing a line never has to
/// wake it: a sleeping receiver would cost every line a futex wake-up and
/// a context switch, more than the write it saves.
const IDLE: Duration = Duration::from_millis(10);

/// The writer thread: takes everything queued, writes it in one go; sleeps
/// [`IDLE`] when there is nothing; ends when every sender is gone.
fn write_loop(rx: Receiver<Item>, mut out: impl std::io::Write) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut told = Vec::new();
    loop {
        // Why the draining stopped: the queue empty, or every sender gone;
        // neither at the batch limit, when more is waiting.
        let mut empty = false;
        let mut gone = false;
        while batch.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(Item::Line(l)) => batch.extend_from_slice(&l),
                Ok(Item::Flush(t)) => told.push(t),
                Err(mpsc::TryRecvError::Empty) => {
                    empty = true;
                    break;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            // A write error (stderr closed) is nowhere to be reported.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
        for t in told.drain(..) {
            let _ = t.send(());
        }
        if gone {
            return;
        }
        if batch.capacity() > 4 * 1024 * 1024 {
            batch = Vec::with_capacity(64 * 1024);
        }
        if empty {
            std::thread::sleep(IDLE);
        }
    }
}

/// One log line being formatted; queued when the formatter drops it.
pub struct LineWriter {
    tx: SyncSender<Item>,
    line: Vec<u8>,
    /// An access-log line: dropped rather than waited for.
    may_drop: bool,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = Item::Line(std::mem::take(&mut self.line));
        if self.may_drop {
            if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
                wharf_telemetry::LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let _ = self.tx.send(line);
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            tx: self.tx.clone(),
            line: Vec::with_capacity(256),
            may_drop: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        let mut w = self.make_writer();
        w.may_drop = meta.target() == wharf_api::access_log::TARGET;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes and write calls the test can read.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<u8>, usize)>>);

    impl std::io::Write for Seen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_lines_are_written_in_order_and_in_batches_and_flush_waits_for_them() {
        let (tx, rx) = mpsc::sync_channel(100);
        let seen = Seen::default();
        // Queued before the writer starts: one batch.
        for i in 0..50 {
            let mut w = LineWriter {
                tx: tx.clone(),
                line: Vec::new(),
                may_drop: i % 2 == 0,
            };
            std::io::Write::write_all(&mut w, format!("line {i}\n").as_bytes()).unwrap();
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(Item::Flush(done_tx)).unwrap();
        let out = seen.clone();
        let writer = std::thread::spawn(move || write_loop(rx, out));
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (bytes, writes) = seen.0.lock().unwrap().clone();
        let want: String = (0..50).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), want);
        assert_eq!(writes, 1, "fifty queued lines, one write");
        drop(tx);
        writer.join().unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_access_lines_only() {
        let (tx, rx) = mpsc::sync_channel(2);
        let line = |may_drop| {
            let mut w = LineWriter {
                tx: tx.clone(),
                line: Vec::new(),
                may_drop,
            };
            std::io::Write::write_all(&mut w, b"x\n").unwrap();
        };
        let before = wharf_telemetry::LOG_LINES_DROPPED.load(Ordering::Relaxed);
        line(true);
        line(false);
        line(true); // the queue is full: dropped, counted
        assert!(wharf_telemetry::LOG_LINES_DROPPED.load(Ordering::Relaxed) > before);
        // Another line waits for room rather than go: it is queued once the
        // writer takes the first two.
        let waiting = std::thread::spawn({
            let tx = tx.clone();
            move || {
                drop(LineWriter {
                    tx,
                    line: b"kept\n".to_vec(),
                    may_drop: false,
                })
            }
        });
        let seen = Seen::default();
        let out = seen.clone();
        let writer = std::thread::spawn(move || write_loop(rx, out));
        waiting.join().unwrap();
        drop(tx);
        writer.join().unwrap();
        let bytes = seen.0.lock().unwrap().0.clone();
        assert_eq!(String::from_utf8(bytes).unwrap(), "x\nx\nkept\n");
    }
}
