//! The Azure IoT DPS device transport over MQTT as an actix actor.
#![warn(missing_docs)]
