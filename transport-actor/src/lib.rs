//! The Azure IoT DPS device transport over MQTT (and MQTT over WebSocket) as an actix actor.
#![warn(missing_docs)]

pub mod session;
