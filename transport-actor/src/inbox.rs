//! A link's inbox: the session's actions for it, in order, for the link's task on the runtime
//! thread.
//!
//! A link gets a handful of commands in its life (subscribe, a publish or two, unsubscribe,
//! close), and a fleet holds thousands of links. tokio's mpsc channel allocates its slots 32 at a
//! time, about 1 KiB per link; a queue behind a mutex plus a [`Notify`] holds what is sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

struct Shared<T> {
    state: Mutex<State<T>>,
    sent: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The sender is gone: once the queue is empty, nothing more will come.
    closed: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The lock is never held across anything that can panic; take it even so.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The actor's end. Dropping it closes the inbox.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The link task's end.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

/// A new, empty inbox.
pub(crate) fn inbox<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closed: false,
        }),
        sent: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` for the receiver; if the receiver has gone, it is dropped with the inbox.
    pub(crate) fn send(&self, item: T) {
        self.0.lock().queue.push_back(item);
        self.0.sent.notify_one();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.sent.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next item, or `None` once the sender has gone and every item sent has been taken.
    ///
    /// Cancel-safe: dropped while waiting, it loses nothing, since every call looks at the
    /// queue before it waits (and a wake-up that comes first is kept by the `Notify`).
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.0.lock();
                if let Some(item) = state.queue.pop_front() {
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            self.0.sent.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn items_come_out_in_order_then_none_once_the_sender_has_gone() {
        let (tx, mut rx) = inbox();
        tx.send(1);
        tx.send(2);
        drop(tx);
        assert_eq!(poll_once(pin!(rx.recv())), Poll::Ready(Some(1)));
        assert_eq!(poll_once(pin!(rx.recv())), Poll::Ready(Some(2)));
        assert_eq!(poll_once(pin!(rx.recv())), Poll::Ready(None));
    }

    #[test]
    fn a_waiting_receiver_gets_what_is_sent_later() {
        let (tx, mut rx) = inbox();
        let mut waiting = pin!(rx.recv());
        assert!(poll_once(waiting.as_mut()).is_pending());
        tx.send("subscribe");
        assert_eq!(poll_once(waiting.as_mut()), Poll::Ready(Some("subscribe")));
    }

    #[test]
    fn a_receive_given_up_while_waiting_loses_nothing() {
        let (tx, mut rx) = inbox();
        {
            // As when `select!` picks another branch: the receive is dropped mid-wait, after
            // the item's wake-up went to it.
            let mut waiting = pin!(rx.recv());
            assert!(poll_once(waiting.as_mut()).is_pending());
            tx.send("close");
        }
        assert_eq!(poll_once(pin!(rx.recv())), Poll::Ready(Some("close")));
        drop(tx);
        assert_eq!(poll_once(pin!(rx.recv())), Poll::Ready(None));
    }
}
