//! A real MQTT 3.1.1 server that speaks the Azure IoT DPS protocol from a script.
#![warn(missing_docs)]
