//! Our own HTTP/1.1 codec for the backend side of an exchange: pingora's
//! client session parsed each response into a header map that we then
//! cloned, took the request as a header map we had cloned from the
//! client's, and read a response head and its body in separate receives.
//! Here the request head is written as bytes from the client's header, the
//! response head is parsed once into the header the client gets, and the
//! body is decoded from the same buffer.
//!
//! - `request_head.rs`: the request head a backend gets;
//! - `response.rs`: a response head and its framing;
//! - `chunked.rs`: chunked bodies, in any pieces;
//! - `upstream.rs`: one exchange on one connection;
//! - `read.rs`: reads through the worker's scratch buffer.

pub(crate) mod chunked;
pub(crate) mod read;
pub(crate) mod request_head;
pub(crate) mod response;
pub(crate) mod upstream;
