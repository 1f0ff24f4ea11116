//! Wire formats: typed views over bytes and their codecs. No I/O, no clock.
//!
//! Contract, as in smoltcp's `wire`: a `Packet<T: AsRef<[u8]>>` view is made from peer bytes
//! only through `new_checked`, after which no accessor can panic; a `Repr` is the validated
//! summary with `parse`, `buffer_len` and `emit`. Code that builds a packet emits a `Repr`
//! into a buffer of `buffer_len()` bytes. Every decoder returns [`crate::error::Malformed`]
//! or a per-format error, never panics, and never trusts a length field.
//!
//! - [`agt`]: the Alexa Gadgets BLE transport (PV packet, transport packets, ACK/NACK).
//! - [`agt_proto`]: the Alexa Gadgets protobuf messages.
//! - [`sifli`]: the SiFli BLE serial-transport service (GATT ids, frames, fragmentation).
//! - [`dfu`]: the SiFli DFU messages, `DFU_ERR_*` codes and identifiers over [`sifli`].
//! - [`mqtt`]: MQTT 3.1.1 packets (QoS 0 and 1) and a streaming decoder with a size cap.
//! - [`enos`]: EnOS OTA over MQTT: the signed CONNECT, topics, JSON bodies, codes, steps.

pub mod agt;
pub mod agt_proto;
pub mod dfu;
pub mod enos;
pub mod mqtt;
pub mod sifli;
