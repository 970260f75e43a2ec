//! Fault injection for the end-to-end test of a control-plane panic: a
//! debug build started with `SWITCHYARD_FAULT=control-panic` panics in the
//! Controller on `status` for the route `panic`. Release builds have no
//! such path.

use crate::protocol::Request;

#[cfg(debug_assertions)]
pub(super) fn maybe_panic(request: &Request) {
    let Request::Status { route: Some(route) } = request else {
        return;
    };
    if route == "panic" && std::env::var("SWITCHYARD_FAULT").as_deref() == Ok("control-panic") {
        panic!("fault injected by SWITCHYARD_FAULT=control-panic");
    }
}

#[cfg(not(debug_assertions))]
pub(super) fn maybe_panic(_: &Request) {}
