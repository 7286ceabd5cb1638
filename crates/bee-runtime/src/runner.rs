//! Runners: where a node's C and Lua services run, the way skynet's worker threads run
//! its services.
//!
//! Every other service is a tokio task of its own. For two services that call each
//! other in turn (a Lua service calling another and waiting for its answer), that costs
//! a thread wake-up every few messages: tokio runs a task woken by the running one next
//! on the same worker only a few times in a row, then queues it where the other worker
//! is woken to steal it (an eventfd write, a context switch, often a move to the other
//! CPU). skynet's workers take the next service with messages from one global queue
//! and wake nobody for a message between services: the worker that sent it takes it.
//!
//! Here a node's runner services are futures polled by a few runner tasks (one per
//! runtime worker) from one ready queue, with skynet's rule for waking:
//! - a service woken by a runner (sent a message by another runner service) is only
//!   queued: this runner takes it when it is done with the current one;
//! - a service woken from outside (a Rust service, a socket, a timer, the cluster)
//!   wakes an idle runner when none is running, or when more than one service waits;
//! - a watch thread (one per process) ticks every millisecond while services wait, and
//!   wakes an idle runner when the queue did not move for a tick (a runner held by a
//!   long callback) or holds more than one service, as skynet's timer thread wakes a
//!   sleeping worker. It is a thread, not a task: a task woken by a runner would wait
//!   in that worker's next-task slot, which no other worker takes, behind a runner that
//!   may be held;
//! - runners yield to the runtime when tokio's cooperative budget is spent (a service's
//!   mailbox takes one unit per message), so sockets and Rust services keep their turn
//!   on the same workers.
//!
//! A service is never polled by two runners at once (each task's state says who has
//! it), and a service's messages stay in its own mailbox in order, as before.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use tokio::sync::Notify;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Not queued, not running: waits for a wake.
const IDLE: u8 = 0;
/// In the ready queue.
const QUEUED: u8 = 1;
/// Being polled by a runner.
const RUNNING: u8 = 2;
/// Woken while being polled: queued again once the poll ends.
const WOKEN: u8 = 3;
/// Its future finished (or panicked): never polled again.
const DONE: u8 = 4;

/// How often the watch looks at a queue with services waiting.
const WATCH_TICK: Duration = Duration::from_millis(1);

thread_local! {
    /// The pool whose runner is polling a service on this thread (null when none).
    static RUNNING_POOL: Cell<*const Pool> = const { Cell::new(std::ptr::null()) };
}

/// One service's future and where it stands.
struct Task {
    /// Its slot in the pool's list of live tasks.
    slot: usize,
    state: AtomicU8,
    future: Mutex<Option<BoxFuture>>,
    pool: Weak<Pool>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => QUEUED,
                RUNNING => WOKEN,
                _ => return,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state == IDLE {
            if let Some(pool) = self.pool.upgrade() {
                pool.push(self.clone());
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Arc<Task>>,
    /// Runners waiting for work, by index (each has its own [`Notify`]).
    idle: Vec<usize>,
    /// Runners not waiting (polling, or about to look at the queue).
    running: usize,
    /// Services taken from the queue so far (the watch's sign of progress).
    taken: u64,
    /// `taken` at the watch's last tick.
    seen: Option<u64>,
    /// The watch looks at this queue.
    watched: bool,
}

/// A node's runners and their ready queue.
pub(crate) struct Pool {
    queue: Mutex<Queue>,
    /// One per runner: a runner waits on its own, so no wake is ever lost or doubled.
    wake: Vec<Notify>,
    /// Every live task, so their futures can be dropped when the runtime shuts down.
    tasks: Mutex<Slots>,
}

/// The live tasks: a slot each (8 bytes), and the free slots to reuse.
#[derive(Default)]
struct Slots {
    live: Vec<Option<Arc<Task>>>,
    free: Vec<usize>,
}

impl Slots {
    fn insert(&mut self, make: impl FnOnce(usize) -> Arc<Task>) -> Arc<Task> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.live.push(None);
            self.live.len() - 1
        });
        let task = make(slot);
        self.live[slot] = Some(task.clone());
        task
    }

    fn remove(&mut self, slot: usize) {
        if let Some(s) = self.live.get_mut(slot) {
            if s.take().is_some() {
                self.free.push(slot);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool with `runners` runner tasks (at least one), started on the current runtime.
    pub(crate) fn start(runners: usize) -> Arc<Pool> {
        let runners = runners.max(1);
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue {
                running: runners,
                ..Queue::default()
            }),
            wake: (0..runners).map(|_| Notify::new()).collect(),
            tasks: Mutex::new(Slots::default()),
        });
        let alive = Arc::new(RunnersAlive(Arc::downgrade(&pool)));
        for me in 0..runners {
            tokio::spawn(runner(pool.clone(), me, alive.clone()));
        }
        pool
    }

    /// Run `future` on the pool's runners.
    pub(crate) fn spawn(self: &Arc<Self>, future: impl Future<Output = ()> + Send + 'static) {
        let future: BoxFuture = Box::pin(future);
        let task = lock(&self.tasks).insert(|slot| {
            Arc::new(Task {
                slot,
                state: AtomicU8::new(QUEUED),
                future: Mutex::new(Some(future)),
                pool: Arc::downgrade(self),
            })
        });
        self.push(task);
    }

    /// Queue a woken task, and wake a runner if skynet's rule says so (module docs).
    fn push(self: &Arc<Self>, task: Arc<Task>) {
        let from_runner = RUNNING_POOL.with(Cell::get) == Arc::as_ptr(self);
        let mut q = lock(&self.queue);
        q.ready.push_back(task);
        let wake_one = !from_runner && !q.idle.is_empty() && (q.running == 0 || q.ready.len() >= 2);
        if wake_one {
            self.wake_idle(q);
        } else if !q.watched {
            q.watched = true;
            drop(q);
            watch(Arc::downgrade(self));
        }
    }

    /// Wake an idle runner, if there is one (marked running here, so it is woken once).
    fn wake_idle(&self, mut q: MutexGuard<'_, Queue>) {
        if let Some(r) = q.idle.pop() {
            q.running += 1;
            drop(q);
            self.wake[r].notify_one();
        }
    }

    /// The watch's tick: `false` once nothing waits (the watch lets go of the queue).
    fn tick(&self) -> bool {
        let mut q = lock(&self.queue);
        if q.ready.is_empty() {
            q.watched = false;
            q.seen = None;
            return false;
        }
        let stuck = q.seen == Some(q.taken);
        q.seen = Some(q.taken);
        if stuck || q.ready.len() >= 2 {
            self.wake_idle(q);
        }
        true
    }

    /// The next task, or `None` after marking runner `me` idle.
    fn take(&self, me: usize) -> Option<Arc<Task>> {
        let mut q = lock(&self.queue);
        match q.ready.pop_front() {
            Some(t) => {
                q.taken += 1;
                Some(t)
            }
            None => {
                q.running -= 1;
                q.idle.push(me);
                None
            }
        }
    }

    /// Drop every task's future (the runtime is shutting down, as tokio drops its tasks).
    fn drop_all(&self) {
        let tasks: Vec<Arc<Task>> = {
            let mut slots = lock(&self.tasks);
            slots.free.clear();
            slots.live.drain(..).flatten().collect()
        };
        lock(&self.queue).ready.clear();
        for t in tasks {
            t.state.store(DONE, Ordering::Release);
            let future = lock(&t.future).take();
            drop(future);
        }
    }
}

impl Task {
    /// Poll the future once (state QUEUED on entry).
    fn run(self: &Arc<Self>, pool: &Arc<Pool>) {
        self.state.store(RUNNING, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let before = RUNNING_POOL.with(|c| c.replace(Arc::as_ptr(pool)));
        let mut slot = lock(&self.future);
        let finished = match slot.as_mut() {
            // A panic ends the task like a finished one: the runner goes on.
            Some(f) => std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(&mut cx)))
                .map_or_else(
                    |_| {
                        tracing::error!("a service's task panicked; it is stopped");
                        true
                    },
                    |p| p.is_ready(),
                ),
            None => true,
        };
        if finished {
            let future = slot.take();
            drop(slot);
            self.state.store(DONE, Ordering::Release);
            lock(&pool.tasks).remove(self.slot);
            // Dropped as a runner service (its drop may send messages).
            drop(future);
        } else {
            drop(slot);
        }
        RUNNING_POOL.with(|c| c.set(before));
        if finished {
            return;
        }
        if self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Woken while it ran: back in the queue.
            self.state.store(QUEUED, Ordering::Release);
            pool.push(self.clone());
        }
    }
}

/// Dropped when the last runner is (the runtime shuts down): the tasks' futures go too.
struct RunnersAlive(Weak<Pool>);

impl Drop for RunnersAlive {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.drop_all();
        }
    }
}

async fn runner(pool: Arc<Pool>, me: usize, _alive: Arc<RunnersAlive>) {
    loop {
        match pool.take(me) {
            Some(task) => {
                task.run(&pool);
                // A service's mailbox spends tokio's budget, one unit per message. Once
                // it is spent, this runner lets the worker's other tasks run. It yields
                // through the worker's deferred list, which wakes no other thread (a
                // task that wakes itself is queued where a sleeping worker is woken to
                // steal it).
                if !tokio::task::coop::has_budget_remaining() {
                    tokio::task::yield_now().await;
                }
            }
            // Marked idle by `take`; whoever wakes this runner marks it running.
            None => pool.wake[me].notified().await,
        }
    }
}

/// The pools the watch thread looks at, and its wake-up.
struct Watch {
    pools: Mutex<Vec<Weak<Pool>>>,
    armed: Condvar,
}

/// skynet's timer-thread wake-up: give `pool` to the process's watch thread (started
/// by the first call), which ticks while any queue it holds has services waiting.
fn watch(pool: Weak<Pool>) {
    static WATCH: OnceLock<Arc<Watch>> = OnceLock::new();
    let w = WATCH.get_or_init(|| {
        let w = Arc::new(Watch {
            pools: Mutex::new(Vec::new()),
            armed: Condvar::new(),
        });
        let for_thread = w.clone();
        std::thread::Builder::new()
            .name("bee-runner-watch".into())
            .spawn(move || watch_thread(&for_thread))
            .expect("cannot start the runners' watch thread");
        w
    });
    lock(&w.pools).push(pool);
    w.armed.notify_one();
}

fn watch_thread(w: &Watch) {
    loop {
        let mut pools = lock(&w.pools);
        while pools.is_empty() {
            pools = w.armed.wait(pools).unwrap_or_else(PoisonError::into_inner);
        }
        drop(pools);
        std::thread::sleep(WATCH_TICK);
        lock(&w.pools).retain(|p| p.upgrade().is_some_and(|p| p.tick()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Two tasks that wake each other through a pair of channels, 10,000 times.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_woken_by_each_other_run_to_the_end() {
        let pool = Pool::start(2);
        let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let b_tx2 = b_tx.clone();
        pool.spawn(async move {
            while let Some(n) = b_rx.recv().await {
                if a_tx.send(n + 1).is_err() {
                    return;
                }
            }
        });
        pool.spawn(async move {
            b_tx2.send(0).unwrap();
            while let Some(n) = a_rx.recv().await {
                if n >= 10_000 {
                    let _ = done_tx.send(n);
                    return;
                }
                b_tx2.send(n).unwrap();
            }
        });
        drop(b_tx);
        let n = tokio::time::timeout(Duration::from_secs(20), done_rx)
            .await
            .expect("the ping-pong finished")
            .unwrap();
        assert_eq!(n, 10_000);
    }

    /// A task that holds its runner for 2 s does not hold up another that is ready.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runner_held_by_a_long_poll_does_not_hold_up_the_queue() {
        let pool = Pool::start(2);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ran = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let pool2 = pool.clone();
        let ran2 = ran.clone();
        pool.spawn(async move {
            let _ = go_rx.await;
            // Queued by this runner, then the runner is held.
            pool2.spawn(async move {
                ran2.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(std::time::Instant::now());
            });
            std::thread::sleep(Duration::from_secs(2));
        });
        let start = std::time::Instant::now();
        go_tx.send(()).unwrap();
        let at = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the queued task ran")
            .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(
            at.duration_since(start) < Duration::from_secs(1),
            "the queued task waited {:?} behind the held runner",
            at.duration_since(start)
        );
    }

    /// A panicking task is stopped; the runners keep running the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_stops_alone() {
        let pool = Pool::start(1);
        pool.spawn(async { panic!("boom") });
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool.spawn(async move {
            let _ = tx.send(7);
        });
        let v = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the second task ran")
            .unwrap();
        assert_eq!(v, 7);
    }
}
