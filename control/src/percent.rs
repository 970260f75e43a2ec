//! Percent-decoding (RFC 3986 §2.1), shared by the access lists (which
//! judge a path as a backend might read it) and the dashboard's query
//! parameters.

/// `raw` with every `%XY` (two hex digits) made the byte it stands for; a
/// `%` not followed by two hex digits stays as it is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |i: usize| raw.get(i).and_then(|&b| (b as char).to_digit(16));
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if let (b'%', Some(high), Some(low)) = (raw[i], hex(i + 1), hex(i + 2)) {
            decoded.push((high * 16 + low) as u8);
            i += 3;
        } else {
            decoded.push(raw[i]);
            i += 1;
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn escapes_become_bytes_and_broken_ones_stay() {
        assert_eq!(percent_decode(b"/%61dmin%2F"), b"/admin/");
        assert_eq!(percent_decode(b"100%"), b"100%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
        assert_eq!(percent_decode(b"%ff"), [0xff]);
    }
}
