//! A deduplicating work queue drained by a fixed number of workers: each
//! reflector owns one, so a burst of objects costs queue entries, not tasks,
//! and a key is never handled by two workers at once.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

/// Longest wait before a failed key is retried.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Keys added while a worker handled them: handled again afterwards.
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
}

pub struct WorkQueue<K> {
    name: &'static str,
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K: Clone + Eq + Hash + std::fmt::Debug + Send + Sync + 'static> WorkQueue<K> {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut state = self.lock();
        if state.queued.contains(&key) {
            return;
        }
        if state.active.contains(&key) {
            state.dirty.insert(key);
            return;
        }
        state.queued.insert(key.clone());
        state.queue.push_back(key);
        drop(state);
        self.ready.notify_one();
    }

    /// Keys waiting or being handled.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.queue.len() + state.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn next(&self) -> K {
        loop {
            {
                let mut state = self.lock();
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.active.insert(key.clone());
                    if !state.queue.is_empty() {
                        // Wake another worker for the rest.
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            self.ready.notified().await;
        }
    }

    fn done<E: std::fmt::Display>(self: &Arc<Self>, key: K, result: Result<(), E>) {
        let mut state = self.lock();
        state.active.remove(&key);
        let requeue_now = state.dirty.remove(&key);
        match result {
            Ok(()) => {
                state.failures.remove(&key);
                drop(state);
                if requeue_now {
                    self.add(key);
                }
            }
            Err(error) => {
                let failures = state.failures.entry(key.clone()).or_default();
                *failures += 1;
                let delay = FIRST_BACKOFF
                    .saturating_mul(1 << (*failures - 1).min(8))
                    .min(MAX_BACKOFF);
                drop(state);
                tracing::warn!(queue = self.name, ?key, %error, retry_in = ?delay, "handling failed");
                if requeue_now {
                    self.add(key);
                } else {
                    let queue = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        queue.add(key);
                    });
                }
            }
        }
    }

    /// Handles keys with `workers` concurrent workers, forever.
    pub async fn run<F, Fut, E>(self: Arc<Self>, workers: usize, handle: F)
    where
        F: Fn(K) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let queue = Arc::clone(&self);
            let handle = handle.clone();
            tasks.spawn(async move {
                loop {
                    let key = queue.next().await;
                    let result = handle(key.clone()).await;
                    queue.done(key, result);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_key_added_many_times_is_handled_once_and_failures_are_retried() {
        let queue = WorkQueue::<u32>::new("test");
        let handled = Arc::new(Mutex::new(Vec::new()));
        let failed_once = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            queue.add(1);
        }
        queue.add(2);
        let runner = {
            let handled = handled.clone();
            let failed_once = failed_once.clone();
            tokio::spawn(queue.clone().run(2, move |key| {
                let handled = handled.clone();
                let failed_once = failed_once.clone();
                async move {
                    if key == 2 && failed_once.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err("transient");
                    }
                    handled.lock().expect("lock").push(key);
                    Ok(())
                }
            }))
        };
        strait_testkit::eventually("both keys handled", Duration::from_secs(5), || {
            let handled = handled.clone();
            async move { handled.lock().expect("lock").len() == 2 }
        })
        .await;
        runner.abort();
        let mut handled = handled.lock().expect("lock").clone();
        handled.sort();
        assert_eq!(handled, [1, 2]);
        assert_eq!(
            failed_once.load(Ordering::SeqCst),
            2,
            "2 failed then succeeded"
        );
    }
}
