//! Our own HTTP/1.x codec, both sides of an exchange. pingora's sessions
//! parsed each message into header maps that we then cloned, kept a
//! session's worth of boxes per request, and read a head and its body in
//! separate receives. Here the client's request head is parsed once into
//! the header the proxy routes by, the backend's request head is written
//! as bytes from it, the response head is parsed once into the header the
//! client gets, and each body is decoded from the buffer its head came in.
//!
//! - `request.rs`: a client's request head, its framing and keep-alive;
//! - `downstream.rs`: one request on a client connection, and its response;
//! - `request_head.rs`: the request head a backend gets;
//! - `response.rs` and `response_head.rs`: a backend's response head, its
//!   framing, and its bytes as the client gets them;
//! - `upstream.rs`: one exchange on one backend connection;
//! - `body.rs` and `chunked.rs`: bodies as their heads frame them, in any
//!   pieces;
//! - `read.rs` and `wire.rs`: reads through the worker's scratch buffer,
//!   timed I/O, chunk size lines.

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod downstream;
pub(crate) mod read;
pub(crate) mod request;
pub(crate) mod request_head;
pub(crate) mod response;
pub(crate) mod response_head;
pub(crate) mod upstream;
pub(crate) mod wire;
