//! The threads that decode release records for the watches: a fixed few, not the blocking
//! pool. Decoding allocates and frees megabytes per record (gunzip output, JSON values); with
//! glibc's allocator every thread that does so ends up with its own arena holding on to freed
//! memory, and tokio's blocking pool grows to a dozen threads during an initial list. A pool
//! sized to the cores keeps that retention to a few arenas.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, LazyLock, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Decode threads: the machine's parallelism, at least one, at most four.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

static POOL: LazyLock<Mutex<Sender<Job>>> = LazyLock::new(|| {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads() {
        let rx = rx.clone();
        // A pool that cannot start a thread still has the others; with none at all, jobs
        // are dropped and their callers see a closed channel (and skip the record).
        let _ = std::thread::Builder::new()
            .name(format!("decode-{i}"))
            .spawn(move || work(&rx));
    }
    Mutex::new(tx)
});

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `f` on a decode thread; `None` if the pool is gone.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .is_ok();
    if !sent {
        return None;
    }
    rx.await.ok()
}
