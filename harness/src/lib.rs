//! The `dps` command's library: the demo, the provision command, the scenario runner and the
//! benchmark, usable from tests.
#![warn(missing_docs)]

pub mod bench;
pub mod connection;
pub mod demo;
pub mod fleet;
pub mod outcome;
pub mod provision;
pub mod proxy_env;
pub mod scenario;
pub mod secrets;
pub mod setup;
pub mod token;
