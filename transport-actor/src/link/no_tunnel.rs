//! A build without the `proxy` feature: no proxy can be configured, so a link never has a hop
//! to tunnel through. The hop is a type with no values, which lets the link's code stay the
//! same in both builds while the compiler proves the tunnel is never opened.

/// A proxy to tunnel through: none, in this build.
#[derive(Debug, Clone)]
pub(crate) enum ProxyHop {}
