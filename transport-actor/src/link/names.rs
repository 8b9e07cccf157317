//! The service's address: a name looked up once for a while on each runtime thread, not once per
//! connection.
//!
//! A fleet opens thousands of connections to one endpoint. Left to ntex, each connection looks
//! the name up again, on a blocking thread, through the system's resolver: against the real
//! service, 2,000 devices would be 2,000 DNS queries. A lookup is kept for [`KEEP_FOR`] (the
//! service's address may move, in a failover) and is shared by the connections that ask while
//! it is under way. A connection that cannot reach the addresses forgets them, so the next
//! attempt looks again. A lookup has no deadline of its own: the connection's deadline ends
//! it (and a waiter's wait) by dropping it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ntex::SharedCfg;
use ntex::connect::{Connect, ConnectError};
use ntex::io::Io;
use tokio::sync::Notify;

use super::connect::Target;

/// How long a lookup is used before the name is looked up again.
const KEEP_FOR: Duration = Duration::from_secs(30);

/// A name's addresses, or the lookup under way that will give them.
enum Entry {
    Known {
        addrs: Rc<[SocketAddr]>,
        since: Instant,
    },
    Looking(Rc<Notify>),
}

thread_local! {
    static NAMES: RefCell<HashMap<(String, u16), Entry>> = RefCell::new(HashMap::new());
}

/// Opens TCP to `target`: straight to an IP address, else to the addresses its name has.
pub(super) async fn open_tcp(target: &Target, cfg: SharedCfg) -> Result<Io, ConnectError> {
    let connect = match target.host.parse::<IpAddr>() {
        Ok(ip) => Connect::with(target.clone(), SocketAddr::new(ip, target.port)),
        Err(_) => {
            let addrs = lookup(&target.host, target.port).await?;
            // In ntex's order: it tries the system's last answer first.
            Connect::new(target.clone()).set_addrs(addrs.iter().rev().copied())
        }
    };
    let opened = ntex::connect::connect_with(connect, cfg).await;
    if let Err(ConnectError::Io(_)) = &opened {
        forget(&target.host, target.port);
    }
    opened
}

/// The addresses of `host`, from a recent lookup or a new one.
async fn lookup(host: &str, port: u16) -> Result<Rc<[SocketAddr]>, ConnectError> {
    let key = (host.to_owned(), port);
    loop {
        let step = NAMES.with_borrow_mut(|names| match names.get(&key) {
            Some(Entry::Known { addrs, since }) if since.elapsed() < KEEP_FOR => {
                Step::Found(addrs.clone())
            }
            Some(Entry::Looking(done)) => Step::Wait(done.clone()),
            _ => {
                let done = Rc::new(Notify::new());
                names.insert(key.clone(), Entry::Looking(done.clone()));
                Step::Look(Looking { key: &key, done })
            }
        });
        match step {
            Step::Found(addrs) => return Ok(addrs),
            // Whoever looks tells the waiters when it is over, found or not (or dropped): then
            // they look at the map again.
            Step::Wait(done) => done.notified().await,
            Step::Look(looking) => return looking.look().await,
        }
    }
}

enum Step<'a> {
    Found(Rc<[SocketAddr]>),
    Wait(Rc<Notify>),
    Look(Looking<'a>),
}

/// The lookup this connection makes for the others. Dropped before it is over (its connection
/// gave up), it takes its entry out of the map and wakes the waiters, so one of them looks.
struct Looking<'a> {
    key: &'a (String, u16),
    done: Rc<Notify>,
}

impl Looking<'_> {
    async fn look(self) -> Result<Rc<[SocketAddr]>, ConnectError> {
        let query = self.key.clone();
        // On tokio's blocking pool, not ntex's: see `runtime::POOL_IDLE`.
        let found = tokio::task::spawn_blocking(move || {
            query
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let addrs = answer(found)?;
        NAMES.with_borrow_mut(|names| {
            let since = Instant::now();
            let known = Entry::Known {
                addrs: addrs.clone(),
                since,
            };
            names.insert(self.key.clone(), known);
        });
        Ok(addrs)
    }
}

/// What a lookup's answer means for a connection: addresses, or ntex's errors for none.
fn answer(found: io::Result<Vec<SocketAddr>>) -> Result<Rc<[SocketAddr]>, ConnectError> {
    match found {
        Ok(addrs) if addrs.is_empty() => Err(ConnectError::NoRecords),
        Ok(addrs) => Ok(addrs.into()),
        Err(e) => Err(ConnectError::Resolver(e)),
    }
}

impl Drop for Looking<'_> {
    fn drop(&mut self) {
        NAMES.with_borrow_mut(|names| {
            if matches!(names.get(self.key), Some(Entry::Looking(done)) if Rc::ptr_eq(done, &self.done))
            {
                names.remove(self.key);
            }
        });
        self.done.notify_waiters();
    }
}

/// Forgets what `host` resolved to: its addresses could not be reached.
fn forget(host: &str, port: u16) {
    let key = (host.to_owned(), port);
    NAMES.with_borrow_mut(|names| {
        if matches!(names.get(&key), Some(Entry::Known { .. })) {
            names.remove(&key);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::future::{Future, poll_fn};
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Polls `future` once, whatever it says.
    async fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) {
        let mut future = Some(future);
        poll_fn(|cx| {
            let _ = future.take().unwrap().poll(cx);
            Poll::Ready(())
        })
        .await
    }

    #[test]
    fn a_name_is_looked_up_once_for_the_connections_that_ask_together_and_after() {
        block_on(async {
            let (first, second) =
                tokio::join!(lookup("localhost", 1883), lookup("localhost", 1883));
            let (first, second) = (first.unwrap(), second.unwrap());
            assert!(Rc::ptr_eq(&first, &second), "one lookup for both");
            assert!(
                first
                    .iter()
                    .all(|addr| addr.ip().is_loopback() && addr.port() == 1883)
            );
            let later = lookup("localhost", 1883).await.unwrap();
            assert!(Rc::ptr_eq(&first, &later), "kept");
            // Another port is another entry; forgetting one looks it up again.
            let other = lookup("localhost", 8883).await.unwrap();
            assert!(!Rc::ptr_eq(&first, &other));
            forget("localhost", 1883);
            let again = lookup("localhost", 1883).await.unwrap();
            assert!(!Rc::ptr_eq(&first, &again), "looked up again");
            assert_eq!(first, again);
        });
    }

    #[test]
    fn no_address_is_no_records_and_a_failure_is_the_resolver_s() {
        assert!(matches!(answer(Ok(vec![])), Err(ConnectError::NoRecords)));
        let failed = answer(Err(io::Error::other("no such name")));
        assert!(
            matches!(failed, Err(ConnectError::Resolver(e)) if e.to_string() == "no such name")
        );
        let one = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(&*answer(Ok(vec![one])).unwrap(), [one]);
    }

    #[test]
    fn a_lookup_older_than_keep_for_is_made_again() {
        let Some(old) = Instant::now().checked_sub(KEEP_FOR + Duration::from_secs(1)) else {
            return; // a machine up for less than half a minute
        };
        let stale: Rc<[SocketAddr]> = vec![SocketAddr::from(([192, 0, 2, 1], 4433))].into();
        NAMES.with_borrow_mut(|names| {
            let entry = Entry::Known {
                addrs: stale.clone(),
                since: old,
            };
            names.insert(("localhost".into(), 4433), entry)
        });
        let fresh = block_on(lookup("localhost", 4433)).unwrap();
        assert!(
            fresh.iter().all(|addr| addr.ip().is_loopback()),
            "{fresh:?}"
        );
    }

    #[test]
    fn a_lookup_given_up_lets_a_waiting_connection_look_instead() {
        block_on(async {
            let mut waiting = pin!(lookup("localhost", 5671));
            {
                let looking = pin!(lookup("localhost", 5671));
                poll_once(looking).await;
                // The first is under way: the second waits for it.
                poll_once(waiting.as_mut()).await;
                let entry = NAMES.with_borrow(|names| {
                    matches!(
                        names.get(&("localhost".into(), 5671)),
                        Some(Entry::Looking(_))
                    )
                });
                assert!(entry);
            }
            // The first was dropped mid-lookup: the second is woken and looks itself.
            let addrs = waiting.await.unwrap();
            assert!(!addrs.is_empty());
        });
    }
}
