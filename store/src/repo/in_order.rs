//! Runs batches of work on the rayon pool and hands their results back in the order the batches
//! were submitted, whatever order they finish in: the blob saver seals block N+1 in the pool
//! while its own thread packs block N, and blobs still reach the packs in input order.
//!
//! Knows nothing of blobs or packs; the caller bounds how much is submitted (it counts the
//! batches and the bytes they hold with [`InOrder::len`] and [`InOrder::bytes`]). A batch that
//! panics passes its panic to the thread that takes its result.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};

/// Whether taking the oldest result waits for it to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Take it only if it has finished.
    No,
    /// Block until it has finished.
    Yes,
}

/// Batches of work submitted to the pool whose results are not taken yet, oldest first.
pub struct InOrder<T> {
    submitted: VecDeque<Submitted<T>>,
    bytes: usize,
}

struct Submitted<T> {
    bytes: usize,
    result: Receiver<std::thread::Result<T>>,
}

impl<T: Send + 'static> Default for InOrder<T> {
    fn default() -> Self {
        Self {
            submitted: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T: Send + 'static> InOrder<T> {
    /// Starts `work` on the rayon pool; `bytes` is what it holds, counted in [`InOrder::bytes`]
    /// until its result is taken. On a thread of the pool itself the work runs at once, so a
    /// caller inside the pool never waits on work queued behind it.
    pub fn submit(&mut self, bytes: usize, work: impl FnOnce() -> T + Send + 'static) {
        let (run, result) = reporting(work);
        if rayon::current_thread_index().is_some() {
            run();
        } else {
            rayon::spawn(run);
        }
        self.push(bytes, result);
    }

    fn push(&mut self, bytes: usize, result: Receiver<std::thread::Result<T>>) {
        self.bytes += bytes;
        self.submitted.push_back(Submitted { bytes, result });
    }

    /// Batches whose result is not taken yet.
    pub fn len(&self) -> usize {
        self.submitted.len()
    }

    /// Whether every result was taken.
    pub fn is_empty(&self) -> bool {
        self.submitted.is_empty()
    }

    /// The bytes the batches not taken yet hold, as given to [`InOrder::submit`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The oldest batch's result: `None` when nothing is submitted, or with [`Wait::No`] when
    /// the oldest has not finished (a younger one that has finished waits its turn).
    ///
    /// # Panics
    /// With the panic of the batch whose result this is.
    pub fn next(&mut self, wait: Wait) -> Option<T> {
        let oldest = self.submitted.front()?;
        let outcome = match wait {
            Wait::Yes => oldest.result.recv().ok(),
            Wait::No => match oldest.result.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            },
        };
        let oldest = self.submitted.pop_front().expect("checked above");
        self.bytes -= oldest.bytes;
        // The work always sends (a panic is caught and sent), so a closed channel cannot happen.
        match outcome.expect("a submitted batch always sends its result") {
            Ok(result) => Some(result),
            Err(panic) => resume_unwind(panic),
        }
    }
}

/// `work` wrapped to send its result, or its panic, to the receiver returned with it.
fn reporting<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> (
    impl FnOnce() + Send + 'static,
    Receiver<std::thread::Result<T>>,
) {
    let (sender, result) = sync_channel(1);
    let run = move || {
        // The receiver may be gone (the caller stopped early): nobody wants the result.
        let _ = sender.send(catch_unwind(AssertUnwindSafe(work)));
    };
    (run, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Sender, channel};

    /// A pool wide enough that every gated batch of a test can wait at once.
    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .expect("pool")
    }

    /// Submits `count` batches that each wait for their gate, then opens the gates in `order`
    /// and takes every result; returns them in the order taken.
    fn finish_in(order: &[usize]) -> Vec<usize> {
        let pool = pool();
        let mut queue = InOrder::default();
        let mut gates: Vec<Sender<()>> = Vec::new();
        let (finished_sender, finished) = channel();
        for index in 0..order.len() {
            let (gate, opened) = channel::<()>();
            gates.push(gate);
            let finished_sender = finished_sender.clone();
            let work = move || {
                opened.recv().expect("gate");
                finished_sender.send(index).expect("report");
                index
            };
            spawn_outside(&pool, &mut queue, index + 1, work);
        }
        let mut taken = Vec::new();
        for &index in order {
            gates[index].send(()).expect("open");
            // Wait until that batch has finished, so later ones finish after it.
            assert_eq!(finished.recv().expect("finished"), index);
            while let Some(result) = queue.next(Wait::No) {
                taken.push(result);
            }
        }
        while let Some(result) = queue.next(Wait::Yes) {
            taken.push(result);
        }
        taken
    }

    /// Submits `work` to `pool` (wide enough for every gated batch at once) instead of the
    /// global pool, which may have as few threads as the machine has cores.
    fn spawn_outside(
        pool: &rayon::ThreadPool,
        queue: &mut InOrder<usize>,
        bytes: usize,
        work: impl FnOnce() -> usize + Send + 'static,
    ) {
        let (run, result) = reporting(work);
        pool.spawn(run);
        queue.push(bytes, result);
    }

    #[test]
    fn results_come_back_in_submission_order_whatever_order_they_finish_in() {
        let orders: [&[usize]; 6] = [
            &[0],
            &[0, 1, 2, 3],
            &[3, 2, 1, 0],
            &[1, 0, 3, 2],
            &[2, 0, 3, 1],
            &[5, 4, 0, 1, 2, 3],
        ];
        for order in orders {
            let expected: Vec<usize> = (0..order.len()).collect();
            assert_eq!(finish_in(order), expected, "finish order {order:?}");
        }
    }

    #[test]
    fn an_unfinished_oldest_batch_holds_back_finished_younger_ones() {
        let pool = pool();
        let mut queue = InOrder::default();
        let (gate, opened) = channel::<()>();
        let (finished_sender, finished) = channel();
        spawn_outside(&pool, &mut queue, 10, move || {
            opened.recv().expect("gate");
            0
        });
        spawn_outside(&pool, &mut queue, 20, move || {
            finished_sender.send(()).expect("report");
            1
        });
        finished.recv().expect("the younger batch finished");
        assert_eq!(queue.next(Wait::No), None);
        assert_eq!((queue.len(), queue.bytes()), (2, 30));
        gate.send(()).expect("open");
        assert_eq!(queue.next(Wait::Yes), Some(0));
        assert_eq!((queue.len(), queue.bytes()), (1, 20));
        assert_eq!(queue.next(Wait::No), Some(1));
        assert!(queue.is_empty());
        assert_eq!(queue.bytes(), 0);
        assert_eq!(queue.next(Wait::Yes), None);
    }

    #[test]
    fn many_tiny_and_one_huge_batch_through_the_global_pool_keep_their_order() {
        let mut queue = InOrder::default();
        let mut expected = Vec::new();
        let mut taken = Vec::new();
        for index in 0..500usize {
            let length = if index == 250 { 4 << 20 } else { index % 7 };
            expected.push(length);
            queue.submit(length, move || vec![0u8; length].len());
            // A bound like the saver's: take what finished, wait for the oldest past 3.
            while let Some(length) = queue.next(if queue.len() > 3 { Wait::Yes } else { Wait::No })
            {
                taken.push(length);
            }
        }
        while let Some(length) = queue.next(Wait::Yes) {
            taken.push(length);
        }
        assert_eq!(taken, expected);
        assert_eq!(queue.bytes(), 0);
    }

    #[test]
    fn a_batch_that_panics_passes_its_panic_to_the_taker_and_the_rest_go_on() {
        let mut queue = InOrder::default();
        queue.submit(1, || 1usize);
        queue.submit(1, || -> usize { panic!("sealing failed mid-way") });
        queue.submit(1, || 3usize);
        assert_eq!(queue.next(Wait::Yes), Some(1));
        let taken = catch_unwind(AssertUnwindSafe(|| queue.next(Wait::Yes)));
        let panic = taken.expect_err("the panic reaches the taker");
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"sealing failed mid-way")
        );
        assert_eq!(queue.next(Wait::Yes), Some(3));
        assert!(queue.is_empty());
    }

    #[test]
    fn work_submitted_from_inside_the_pool_runs_at_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        // With one thread, a batch spawned behind the waiting caller would never run.
        let results = pool.install(|| {
            let mut queue = InOrder::default();
            queue.submit(0, || 7usize);
            queue.submit(0, || 8usize);
            [
                queue.next(Wait::No),
                queue.next(Wait::Yes),
                queue.next(Wait::No),
            ]
        });
        assert_eq!(results, [Some(7), Some(8), None]);
    }
}
