//! `max_body_size`: a request whose body is larger than its route allows
//! gets `413`. When its length is declared, before anything is sent
//! upstream ([`declared_too_large`]); otherwise (chunked, or an HTTP/2
//! body without a length) as the body passes the limit ([`Allowance`]),
//! the bytes past it never go up and the backend's connection is dropped.

use pingora::http::RequestHeader;

use super::exchange::Exchange;
use super::h1::wire::agreed_length;
use super::Outcome;

pub(crate) const TOO_LARGE_BODY: &[u8] = b"switchyard: the request body is too large\n";

/// Whether the request declares a body longer than `limit`.
pub(super) fn declared_too_large(request: &RequestHeader, limit: Option<u64>) -> bool {
    match (limit, agreed_length(&request.headers)) {
        (Some(limit), Ok(Some(length))) => length > limit,
        _ => false,
    }
}

/// What is left of a request body's allowance as its bytes go up.
pub(super) struct Allowance {
    left: Option<u64>,
}

impl Allowance {
    pub(super) fn new(limit: Option<u64>) -> Allowance {
        Allowance { left: limit }
    }

    /// Takes `len` more bytes of the body: `Err` with how the exchange
    /// ends when they pass the limit — `413` when no response began, else
    /// the connection is closed.
    pub(super) fn take(&mut self, len: usize, response_started: bool) -> Result<(), Exchange> {
        let Some(left) = self.left.as_mut() else {
            return Ok(());
        };
        match left.checked_sub(len as u64) {
            Some(rest) => {
                *left = rest;
                Ok(())
            }
            None => {
                tracing::debug!("request body over max_body_size: refused");
                Err(Exchange::Failed(if response_started {
                    Outcome::Abandon
                } else {
                    Outcome::Reject(413, TOO_LARGE_BODY)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_itself_passes_one_byte_more_does_not() {
        let mut allowance = Allowance::new(Some(10));
        assert!(allowance.take(4, false).is_ok());
        assert!(allowance.take(6, false).is_ok());
        assert!(matches!(
            allowance.take(1, false),
            Err(Exchange::Failed(Outcome::Reject(413, _)))
        ));
        let mut allowance = Allowance::new(Some(10));
        assert!(matches!(
            allowance.take(11, true),
            Err(Exchange::Failed(Outcome::Abandon))
        ));
        let mut unlimited = Allowance::new(None);
        assert!(unlimited.take(usize::MAX, false).is_ok());
    }

    #[test]
    fn a_declared_length_is_judged_before_the_body() {
        let mut request = RequestHeader::build("POST", b"/", None).unwrap();
        request.insert_header("content-length", "11").unwrap();
        assert!(declared_too_large(&request, Some(10)));
        assert!(!declared_too_large(&request, Some(11)));
        assert!(!declared_too_large(&request, None));
        let chunked = RequestHeader::build("POST", b"/", None).unwrap();
        assert!(!declared_too_large(&chunked, Some(0)));
    }
}
